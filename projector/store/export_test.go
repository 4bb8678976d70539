package store

// SetBeforeEvict lets tests hold a session cache's reader before it
// evicts a batch.
func SetBeforeEvict(c *Sessions, f func(seq uint64)) { c.beforeEvict = f }
