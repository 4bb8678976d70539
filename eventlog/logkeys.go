package eventlog

// Log attribute keys, one spelling for each thing every package logs (as
// litestream's log.go keeps them), so that one query finds a stream
// position or a room in the logs of every role. New log lines use these.
const (
	LogStream = "stream"     // a stream name (StreamRooms, ...)
	LogSeq    = "stream_seq" // a position on that stream
	LogRecord = "record"     // a record type
	LogRoom   = "room_id"
	LogUser   = "user_id"
	LogDevice = "device_id"
	LogEvent  = "event_id"
	LogRole   = "role" // the process's role (serve, api, projector, sync)
	LogErr    = "err"
)
