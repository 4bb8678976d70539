package api_test

import (
	"context"
	"testing"

	"strand/api"
	"strand/api/apitest"
	"strand/projector"

	"strand/eventlog/logtest"
	"strand/projector/store/storetest"
)

func logtestRestart(t *testing.T, dir string) *logtest.Server { return logtest.StartAt(t, dir) }

func newDBURL(t *testing.T) string { return storetest.NewURL(t) }

func apiSharedSecretMAC(secret, nonce, user, password string, admin bool) string {
	return api.SharedSecretMAC(secret, nonce, user, password, admin, "")
}

// replayMatches replays env's log into a new database (maxBatch records
// a batch) and fails unless its dump equals liveDump (invariant 2). It
// returns the projector and the replay's dump, to replay again.
func replayMatches(t *testing.T, env *apitest.Env, liveDump string, maxBatch int) (*projector.Projector, string) {
	t.Helper()
	ctx := context.Background()
	replayed := env.StoreAt(newDBURL(t))
	p := &projector.Projector{Log: env.Conn(), Store: replayed, MaxBatch: maxBatch}
	if err := p.Replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	dump, err := replayed.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if liveDump != dump {
		t.Fatalf("replay differs from the live projection\nlive:\n%s\nreplay:\n%s", liveDump, dump)
	}
	return p, dump
}

// projectionReplays waits for env's projection to catch up with the log
// and checks that a replay into a new database equals it.
func projectionReplays(t *testing.T, env *apitest.Env, maxBatch int) string {
	t.Helper()
	live := env.Store()
	waitCaughtUp(t, env, live)
	dump, err := live.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	replayMatches(t, env, dump, maxBatch)
	return dump
}
