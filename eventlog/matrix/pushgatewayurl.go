package matrix

import "net/url"

// PushGatewayNotifyPath is the path the spec requires of an http pusher's
// URL (push gateway API, POST /_matrix/push/v1/notify).
const PushGatewayNotifyPath = "/_matrix/push/v1/notify"

// PushGatewayURL parses an http pusher's data.url: an http or https URL
// with a host and the path PushGatewayNotifyPath. POST /pushers/set
// refuses any other, and delivery sends to none other; which addresses it
// may reach is the outbound client's decision.
func PushGatewayURL(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != PushGatewayNotifyPath {
		return nil, false
	}
	return u, true
}
