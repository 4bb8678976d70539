package matrix

import "testing"

func TestPushGatewayURL(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://push.example.org/_matrix/push/v1/notify":     true,
		"http://127.0.0.1:8080/_matrix/push/v1/notify":        true,
		"https://push.example.org/_matrix/push/v1/notify?a=b": true,
		"ftp://push.example.org/_matrix/push/v1/notify":       false,
		"file:///_matrix/push/v1/notify":                      false,
		"https:///_matrix/push/v1/notify":                     false,
		"https://push.example.org/_matrix/push/v1/notify/":    false,
		"https://push.example.org/other":                      false,
		"/_matrix/push/v1/notify":                             false,
		"https://push.example.org/_matrix/push/v1/notify\x7f": false,
		"": false,
	} {
		if _, got := PushGatewayURL(raw); got != want {
			t.Errorf("PushGatewayURL(%q) = %v, want %v", raw, got, want)
		}
	}
}
