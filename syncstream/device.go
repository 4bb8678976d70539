package syncstream

import "sync"

// deviceState is what a worker remembers per device between responses
// for end-to-end encryption: the key counts of its last built response
// (the fast paths answer only when nothing concerning the user happened
// since, and a change of key counts is such a thing, so the remembered
// counts are still right), and the newest to-device message it was sent,
// to record the delivery once the device comes back with a later token.
type deviceState struct {
	mu sync.Mutex
	m  map[string]*deviceEntry
}

type deviceEntry struct {
	counts    map[string]int
	fallbacks *[]string
	sentTo    uint64 // newest to-device position delivered, not yet acknowledged
}

const deviceStateMax = 100000

func deviceKey(user, device string) string { return user + "\x00" + device }

// built remembers what a built response told the device.
func (d *deviceState) built(b *built, user, device string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || len(d.m) >= deviceStateMax {
		d.m = map[string]*deviceEntry{}
	}
	k := deviceKey(user, device)
	e := d.m[k]
	if e == nil {
		e = &deviceEntry{}
		d.m[k] = e
	}
	e.counts, e.fallbacks = b.resp.OTKCounts, b.resp.UnusedFallbacks
	e.sentTo = max(e.sentTo, b.toDeviceThrough)
}

// fill puts the device's last known key counts into a response that was
// not built (and leaves them out if none are known).
func (d *deviceState) fill(r *response, user, device string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.m[deviceKey(user, device)]; e != nil {
		r.OTKCounts, r.UnusedFallbacks = e.counts, e.fallbacks
	}
}

// delivered reports, once, that the device has acknowledged the
// to-device messages it was sent (its token is at or beyond them).
func (d *deviceState) delivered(user, device string, since uint64) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.m[deviceKey(user, device)]
	if e == nil || e.sentTo == 0 || since < e.sentTo {
		return 0, false
	}
	through := e.sentTo
	e.sentTo = 0
	return through, true
}
