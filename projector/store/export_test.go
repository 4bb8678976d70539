package store

// SetBeforeEvict lets tests hold a session cache's reader before it
// evicts a batch.
func SetBeforeEvict(c *Sessions, f func(seq uint64)) { c.beforeEvict = f }

// PeerCount is how many session caches (itself included) c has heard from.
func PeerCount(c *Sessions) int {
	c.peers.mu.Lock()
	defer c.peers.mu.Unlock()
	return len(c.peers.pos)
}
