package syncstream

import (
	"context"
	"sync"
)

// coalescer shares one build among identical concurrent requests without
// breaking read-your-writes. A request may only share a build that starts
// after it arrived: one already running may have taken its snapshot before
// a write the client saw acknowledged just before asking, so a request
// that finds a build running waits for it and then joins (or starts) the
// next one. Identical requests arriving during a build all share that
// next build, so a burst costs at most two builds per key.
//
// (golang.org/x/sync/singleflight, used before, joins the running call,
// which is exactly the stale snapshot.)
type coalescer[T any] struct {
	mu    sync.Mutex
	calls map[string]*coalescedCall[T]
}

type coalescedCall[T any] struct {
	started bool          // fn has begun: later arrivals must not join
	done    chan struct{} // closed when v and err are set
	v       T
	err     error
}

// do returns fn's result from a call that started no earlier than this
// one. fn runs detached from any one caller; a caller whose ctx ends while
// it waits to join gets ctx's error.
func (c *coalescer[T]) do(ctx context.Context, key string, fn func() (T, error)) (T, error) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]*coalescedCall[T]{}
	}
	if call, ok := c.calls[key]; ok && !call.started {
		c.mu.Unlock()
		return call.wait(ctx)
	}
	running := c.calls[key]
	call := &coalescedCall[T]{done: make(chan struct{})}
	c.calls[key] = call
	c.mu.Unlock()

	if running != nil {
		// Others may join call while it waits; it must run for them even
		// if this caller goes away, so the wait ignores ctx.
		<-running.done
	}
	c.mu.Lock()
	call.started = true
	c.mu.Unlock()
	call.v, call.err = fn()
	c.mu.Lock()
	if c.calls[key] == call {
		delete(c.calls, key)
	}
	c.mu.Unlock()
	close(call.done)
	return call.v, call.err
}

func (call *coalescedCall[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-call.done:
		return call.v, call.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
