package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"strand/eventlog"
	"strand/eventlog/logtest"
)

// openLog starts a JetStream server with Strand's streams declared.
func openLog(t *testing.T) *eventlog.Log {
	t.Helper()
	srv := logtest.Start(t)
	l, err := eventlog.New(srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return l
}

// appendUsers appends one filter.created record for each of users, in
// order, and returns their sequences.
func appendUsers(ctx context.Context, t *testing.T, l *eventlog.Log, users ...string) []uint64 {
	t.Helper()
	var seqs []uint64
	for i, u := range users {
		seq, err := l.Append(ctx, eventlog.UserSubject(u), &eventlog.FilterCreated{UserID: u, FilterID: fmt.Sprint(i)}, eventlog.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// Read delivers every record once, in order, in batches of at most
// MaxBatch, and returns nil once it has delivered StopAt.
func TestReadBatchesInOrderUntilStopAt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := openLog(t)
	users := make([]string, 50)
	for i := range users {
		users[i] = fmt.Sprintf("@u%d:x", i)
	}
	appendUsers(ctx, t, l, users...)

	var got []uint64
	batches := 0
	err := l.Read(ctx, eventlog.StreamAccounts, eventlog.ReadOptions{From: 1, MaxBatch: 8, StopAt: 50}, func(_ context.Context, batch []eventlog.Msg) error {
		batches++
		if len(batch) == 0 || len(batch) > 8 {
			t.Errorf("batch of %d records", len(batch))
		}
		for _, m := range batch {
			got = append(got, m.Seq)
			if m.Stream != eventlog.StreamAccounts || m.Type != (eventlog.FilterCreated{}).RecordType() {
				t.Errorf("seq %d: stream %s type %s", m.Seq, m.Stream, m.Type)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != 50 {
		t.Fatalf("delivered %d records, want 50", len(got))
	}
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d: out of order or repeated", i, seq)
		}
	}
	if batches < 50/8 {
		t.Fatalf("%d batches for 50 records of at most 8", batches)
	}
}

// From starts the read; StopAt ends it after the record at or past it; a
// filtered read ends when its subjects have nothing more, even if that is
// before StopAt; a handler's error ends the read with that error.
func TestReadStopPositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := openLog(t)
	appendUsers(ctx, t, l, "@a:x", "@b:x", "@a:x", "@b:x", "@b:x", "@b:x")

	read := func(o eventlog.ReadOptions) []uint64 {
		t.Helper()
		var got []uint64
		err := l.Read(ctx, eventlog.StreamAccounts, o, func(_ context.Context, batch []eventlog.Msg) error {
			for _, m := range batch {
				got = append(got, m.Seq)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Read(%+v): %v", o, err)
		}
		return got
	}
	if got := read(eventlog.ReadOptions{From: 3, StopAt: 4, MaxBatch: 1}); fmt.Sprint(got) != "[3 4]" {
		t.Errorf("From 3 StopAt 4: %v", got)
	}
	// @a:x's last record is seq 3; StopAt 6 is never reached on its
	// subject, and the read ends when nothing is pending.
	if got := read(eventlog.ReadOptions{From: 1, StopAt: 6, Subjects: []string{eventlog.UserSubject("@a:x")}}); fmt.Sprint(got) != "[1 3]" {
		t.Errorf("filtered: %v", got)
	}

	errStop := errors.New("stop")
	err := l.Read(ctx, eventlog.StreamAccounts, eventlog.ReadOptions{From: 1}, func(context.Context, []eventlog.Msg) error { return errStop })
	if !errors.Is(err, errStop) {
		t.Errorf("handler error: Read returned %v", err)
	}
	// Without StopAt a read waits for more until its context ends.
	cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer ccancel()
	err = l.Read(cctx, eventlog.StreamAccounts, eventlog.ReadOptions{From: 7}, func(context.Context, []eventlog.Msg) error {
		t.Error("delivered a record past the head")
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read past the head: %v", err)
	}
}

// An append expecting a subject's last sequence succeeds only while it is
// the last; otherwise ErrConflict, and nothing is stored. A repeated
// message ID is absorbed as a duplicate.
func TestAppendExpectedSequenceAndDuplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := openLog(t)
	subj := eventlog.UserSubject("@a:x")
	rec := &eventlog.UserRegistered{UserID: "@a:x", TS: 1}
	first, err := l.Append(ctx, subj, rec, eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, subj, rec, eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0)}); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("second first append: %v, want ErrConflict", err)
	}
	// Another subject moving the stream does not matter.
	appendUsers(ctx, t, l, "@b:x")
	second, err := l.Append(ctx, subj, &eventlog.FilterCreated{UserID: "@a:x", FilterID: "1"}, eventlog.AppendOptions{ExpectSeq: eventlog.Expect(first)})
	if err != nil {
		t.Fatalf("append expecting %d: %v", first, err)
	}
	if _, err := l.Append(ctx, subj, rec, eventlog.AppendOptions{ExpectSeq: eventlog.Expect(first)}); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("stale expectation: %v, want ErrConflict", err)
	}
	if last, err := l.LastSeq(ctx, eventlog.StreamAccounts, subj); err != nil || last != second {
		t.Fatalf("LastSeq %d (%v), want %d: a refused append was stored", last, err, second)
	}

	o := eventlog.AppendOptions{MsgID: "once"}
	s1, dup1, err := l.AppendDedup(ctx, subj, &eventlog.FilterCreated{UserID: "@a:x", FilterID: "2"}, o)
	if err != nil || dup1 {
		t.Fatalf("first: %d %v %v", s1, dup1, err)
	}
	s2, dup2, err := l.AppendDedup(ctx, subj, &eventlog.FilterCreated{UserID: "@a:x", FilterID: "2"}, o)
	if err != nil || !dup2 || s2 != s1 {
		t.Fatalf("repeat: seq %d dup %v err %v, want seq %d dup true", s2, dup2, err, s1)
	}
}
