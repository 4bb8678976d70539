package sessions

import "time"

// SetBeforeEvict lets tests hold a session cache's reader before it
// evicts a batch.
func SetBeforeEvict(c *Cache, f func(seq uint64)) { c.beforeEvict = f }

// SetEvictWait changes how long a revocation waits for other caches
// (0: the default), so a test can see it give up without waiting long.
func SetEvictWait(c *Cache, d time.Duration) { c.evictWait = d }
