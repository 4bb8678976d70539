package sessions

// SetBeforeEvict lets tests hold a session cache's reader before it
// evicts a batch.
func SetBeforeEvict(c *Cache, f func(seq uint64)) { c.beforeEvict = f }
