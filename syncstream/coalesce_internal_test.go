package syncstream

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A request never gets a build that started before it arrived (it could
// predate a write the client saw succeed), but requests arriving during
// one build share the next.
func TestCoalescerSharesOnlyLaterBuilds(t *testing.T) {
	var c coalescer[int64]
	var written, builds atomic.Int64
	release := make(chan struct{})
	build := func() (int64, error) {
		builds.Add(1)
		snapshot := written.Load() // what this build's snapshot shows
		if builds.Load() == 1 {
			<-release
		}
		return snapshot, nil
	}
	ctx := context.Background()
	first := make(chan int64)
	go func() { v, _ := c.do(ctx, "k", build); first <- v }()
	for builds.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	written.Store(1) // a write is acknowledged; then two identical requests come
	var wg sync.WaitGroup
	got := make([]int64, 2)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], _ = c.do(ctx, "k", build) }()
	}
	time.Sleep(50 * time.Millisecond) // both are waiting by now
	close(release)
	wg.Wait()
	if v := <-first; v != 0 {
		t.Fatalf("first build saw %d", v)
	}
	for i, v := range got {
		if v != 1 {
			t.Errorf("request %d arrived after the write but got a build that missed it", i)
		}
	}
	if n := builds.Load(); n != 2 {
		t.Errorf("%d builds, want 2 (the later requests share one)", n)
	}
	// A caller that gives up while waiting to join gets its context's
	// error; the build still runs for the others.
	release = make(chan struct{})
	builds.Store(0)
	go func() { _, _ = c.do(ctx, "k", build) }()
	for builds.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error)
	go func() { _, err := c.do(cctx, "k", build); errc <- err }()
	go func() { _, err := c.do(cctx, "k", build); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	close(release)
	var canceled, ok int
	for range 2 {
		switch err := <-errc; err {
		case nil:
			ok++ // the one that ran the build, for the other
		case context.Canceled:
			canceled++
		default:
			t.Fatal(err)
		}
	}
	if ok != 1 || canceled != 1 {
		t.Fatalf("%d builds ran to the end, %d callers gave up; want 1 and 1", ok, canceled)
	}
}
