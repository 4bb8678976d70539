package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"strand/api"
	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/matrix"
)

// badCase is one request that must be refused before anything is
// appended.
type badCase struct {
	name   string
	method string
	path   string // under the server's base URL
	body   string // raw JSON; "" for none
	header map[string]string
	token  string // the access token; "" for the fixture user's
}

// badFixture is what the generators need to build requests that reach a
// handler's checks: a user with a device, a room, an event, a backup.
type badFixture struct {
	me, dev, room, event string // room and event path-escaped
	rawRoom              string
	nonce                func() string // a fresh shared-secret nonce
	media                func() string // a fresh media ID from /media/v1/create
	admin                string        // a server admin's access token
	n                    int
}

// asToken is the as_token of the application service the test registers
// (bridgeYAML), whose users are @bridge_*.
const asToken = "as_secret"

// fresh returns a new username, so that a case accepted by mistake does
// not make the next one fail for another reason (M_USER_IN_USE).
func (f *badFixture) fresh() string {
	f.n++
	return fmt.Sprintf("newbie%d", f.n)
}

func jsonStr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// overLong returns strings that exceed limit: just over it, the 6,000
// bytes of the crashers, and 100 KB for the generous limits. They
// are random letters and digits: PostgreSQL compresses a long run of one
// letter so well that its index entry would fit.
func overLong(limit int) []string {
	out := []string{randomText(limit + 1)}
	if limit+1 < 6000 {
		out = append(out, randomText(6000))
	}
	if limit >= matrix.MaxDisplayNameBytes {
		out = append(out, randomText(100<<10))
	}
	return out
}

var textRand = rand.New(rand.NewPCG(11, 11))

func randomText(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[textRand.IntN(len(alphabet))]
	}
	return string(b)
}

// idSlot is one place where a client-chosen string becomes an ID, a key
// or a stored string, with its bound; build makes a request carrying v
// there (possibly with a prefix, which only makes it longer).
type idSlot struct {
	name  string
	limit int
	build func(f *badFixture, v string) badCase
}

func pusherJSON(appID, pushkey, name string) string {
	return `{"kind":"http","app_id":` + appID + `,"pushkey":` + pushkey + `,"app_display_name":` + name +
		`,"device_display_name":"d","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`
}

func idSlots() []idSlot {
	c := func(method, path, body string) badCase { return badCase{method: method, path: path, body: body} }
	v3 := func(p string) string { return "/_matrix/client/v3" + p }
	return []idSlot{
		{"register device_id", matrix.MaxDeviceIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/register"), `{"username":"`+f.fresh()+`","password":"pw","auth":{"type":"m.login.dummy"},"device_id":`+jsonStr(v)+`}`)
		}},
		{"register initial_device_display_name", matrix.MaxDisplayNameBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/register"), `{"username":"`+f.fresh()+`","password":"pw","auth":{"type":"m.login.dummy"},"initial_device_display_name":`+jsonStr(v)+`}`)
		}},
		{"register username", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/register"), `{"username":`+jsonStr(v)+`,"password":"pw","auth":{"type":"m.login.dummy"}}`)
		}},
		{"login device_id", matrix.MaxDeviceIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/login"), `{"type":"m.login.password","user":"mallory","password":"pw","device_id":`+jsonStr(v)+`}`)
		}},
		{"login initial_device_display_name", matrix.MaxDisplayNameBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/login"), `{"type":"m.login.password","user":"mallory","password":"pw","initial_device_display_name":`+jsonStr(v)+`}`)
		}},
		{"device display_name", matrix.MaxDisplayNameBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/devices/"+f.dev), `{"display_name":`+jsonStr(v)+`}`)
		}},
		{"delete_devices device ID", matrix.MaxDeviceIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/delete_devices"), `{"devices":[`+jsonStr(v)+`],"auth":{"type":"m.login.password","user":"mallory","password":"pw"}}`)
		}},
		{"pusher app_id", matrix.MaxPusherAppIDChars, func(f *badFixture, v string) badCase {
			return c("POST", v3("/pushers/set"), pusherJSON(jsonStr(v), `"k"`, `"n"`))
		}},
		{"pusher pushkey", matrix.MaxPushkeyBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/pushers/set"), pusherJSON(`"a"`, jsonStr(v), `"n"`))
		}},
		{"pusher app_display_name", matrix.MaxPusherFieldBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/pushers/set"), pusherJSON(`"a"`, `"k"`, jsonStr(v)))
		}},
		{"pusher device_display_name", matrix.MaxPusherFieldBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/pushers/set"), `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"n","device_display_name":`+jsonStr(v)+
				`,"lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`)
		}},
		{"pusher lang", matrix.MaxPusherFieldBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/pushers/set"), `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"n","device_display_name":"d","lang":`+jsonStr(v)+
				`,"data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`)
		}},
		{"pusher profile_tag", matrix.MaxPusherFieldBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/pushers/set"), `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"n","device_display_name":"d","lang":"en","profile_tag":`+jsonStr(v)+
				`,"data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`)
		}},
		{"send txnId", matrix.MaxTxnIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/rooms/"+f.room+"/send/m.room.message/"+v), `{"msgtype":"m.text","body":"hi"}`)
		}},
		{"send event type", matrix.MaxEventTypeBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/rooms/"+f.room+"/send/"+v+"/t1"), `{}`)
		}},
		{"state event type", matrix.MaxEventTypeBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/rooms/"+f.room+"/state/"+v+"/"), `{}`)
		}},
		{"state key", matrix.MaxStateKeyBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/rooms/"+f.room+"/state/org.example.state/"+v), `{}`)
		}},
		{"redact txnId", matrix.MaxTxnIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/rooms/"+f.room+"/redact/"+f.event+"/"+v), `{}`)
		}},
		{"receipt thread_id", matrix.MaxThreadIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/receipt/m.read/"+f.event), `{"thread_id":`+jsonStr(v)+`}`)
		}},
		{"receipt event ID", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/receipt/m.read/$"+v), `{}`)
		}},
		{"read marker event ID", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/read_markers"), `{"m.read":`+jsonStr("$"+v)+`}`)
		}},
		{"signatures upload signing key ID", matrix.MaxKeyIDBytes, func(f *badFixture, v string) badCase {
			obj := fmt.Sprintf(`{"user_id":%q,"device_id":%q,"keys":{"ed25519:%s":"k"},"signatures":{%q:{%s:"sig"}}}`,
				f.me, f.dev, f.dev, f.me, jsonStr("ed25519:"+v))
			return c("POST", v3("/keys/signatures/upload"), fmt.Sprintf(`{%q:{%q:%s}}`, f.me, f.dev, obj))
		}},
		{"signatures upload signed key ID", matrix.MaxKeyIDBytes, func(f *badFixture, v string) badCase {
			obj := fmt.Sprintf(`{"user_id":%q,"keys":{"ed25519:x":"k"},"signatures":{%q:{"ed25519:%s":"sig"}}}`, f.me, f.me, f.dev)
			return c("POST", v3("/keys/signatures/upload"), fmt.Sprintf(`{%q:{%s:%s}}`, f.me, jsonStr(v), obj))
		}},
		{"one-time key ID", matrix.MaxKeyIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/keys/upload"), `{"one_time_keys":{`+jsonStr("signed_curve25519:"+v)+`:"key"}}`)
		}},
		{"fallback key ID", matrix.MaxKeyIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/keys/upload"), `{"fallback_keys":{`+jsonStr("signed_curve25519:"+v)+`:"key"}}`)
		}},
		{"device keys key ID", matrix.MaxKeyIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/keys/upload"), fmt.Sprintf(`{"device_keys":{"user_id":%q,"device_id":%q,"algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{%s:"k"},"signatures":{%q:{"ed25519:%s":"sig"}}}}`,
				f.me, f.dev, jsonStr("ed25519:"+v), f.me, f.dev))
		}},
		{"cross-signing key ID", matrix.MaxKeyIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/keys/device_signing/upload"), fmt.Sprintf(`{"master_key":{"user_id":%q,"usage":["master"],"keys":{%s:"k"}}}`, f.me, jsonStr("ed25519:"+v)))
		}},
		{"to-device txnId", matrix.MaxTxnIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/sendToDevice/m.test/"+v), fmt.Sprintf(`{"messages":{%q:{%q:{}}}}`, f.me, f.dev))
		}},
		{"to-device event type", matrix.MaxEventTypeBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/sendToDevice/"+v+"/t1"), fmt.Sprintf(`{"messages":{%q:{%q:{}}}}`, f.me, f.dev))
		}},
		{"to-device device ID", matrix.MaxDeviceIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/sendToDevice/m.test/t2"), fmt.Sprintf(`{"messages":{%q:{%s:{}}}}`, f.me, jsonStr(v)))
		}},
		{"to-device user ID", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/sendToDevice/m.test/t3"), `{"messages":{`+jsonStr("@"+v+":localhost")+`:{"D":{}}}}`)
		}},
		{"account data type", matrix.MaxEventTypeBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/user/"+f.me+"/account_data/"+v), `{}`)
		}},
		{"room account data room ID", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/user/"+f.me+"/rooms/!"+v+":localhost/account_data/org.example.x"), `{}`)
		}},
		{"room tag", matrix.MaxTagBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/user/"+f.me+"/rooms/"+f.room+"/tags/"+v), `{}`)
		}},
		{"profile displayname", matrix.MaxDisplayNameBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/profile/"+f.me+"/displayname"), `{"displayname":`+jsonStr(v)+`}`)
		}},
		{"profile avatar_url", matrix.MaxAvatarURLBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/profile/"+f.me+"/avatar_url"), `{"avatar_url":`+jsonStr("mxc://localhost/"+v)+`}`)
		}},
		{"presence status_msg", matrix.MaxStatusMsgBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/presence/"+f.me+"/status"), `{"presence":"online","status_msg":`+jsonStr(v)+`}`)
		}},
		{"backup algorithm", matrix.MaxBackupIDBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/room_keys/version"), `{"algorithm":`+jsonStr(v)+`,"auth_data":{}}`)
		}},
		{"backup session ID in path", matrix.MaxBackupIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/room_keys/keys/"+f.room+"/"+v+"?version=1"), `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}}`)
		}},
		{"backup session ID in body", matrix.MaxBackupIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/room_keys/keys?version=1"), fmt.Sprintf(`{"rooms":{%q:{"sessions":{%s:{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}}}}}}`,
				f.rawRoom, jsonStr(v)))
		}},
		{"backup deletion session ID", matrix.MaxBackupIDBytes, func(f *badFixture, v string) badCase {
			return c("DELETE", v3("/room_keys/keys/"+f.room+"/"+v+"?version=1"), "")
		}},
		{"backup deletion room ID", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("DELETE", v3("/room_keys/keys/!"+v+":localhost?version=1"), "")
		}},
		{"push rule ID", matrix.MaxPushRuleIDBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/pushrules/global/override/"+v), `{"actions":["notify"]}`)
		}},
		{"push rule pattern", matrix.MaxPushPatternBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/pushrules/global/content/r1"), `{"actions":["notify"],"pattern":`+jsonStr(v)+`}`)
		}},
		{"push rule condition pattern", matrix.MaxPushPatternBytes, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/pushrules/global/override/r2"), `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"content.body","pattern":`+jsonStr(v)+`}]}`)
		}},
		{"alias", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("PUT", v3("/directory/room/"+url.PathEscape("#"+v+":localhost")), `{"room_id":`+jsonStr(f.rawRoom)+`}`)
		}},
		{"createRoom room_alias_name", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/createRoom"), `{"room_alias_name":`+jsonStr(v)+`}`)
		}},
		{"createRoom initial_state type", matrix.MaxEventTypeBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/createRoom"), `{"initial_state":[{"type":`+jsonStr(v)+`,"state_key":"","content":{}}]}`)
		}},
		{"createRoom initial_state state_key", matrix.MaxStateKeyBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/createRoom"), `{"initial_state":[{"type":"org.example.state","state_key":`+jsonStr(v)+`,"content":{}}]}`)
		}},
		{"createRoom invite", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/createRoom"), `{"invite":[`+jsonStr("@"+v+":localhost")+`]}`)
		}},
		{"upgrade additional_creators", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/upgrade"), `{"new_version":"12","additional_creators":[`+jsonStr("@"+v+":localhost")+`]}`)
		}},
		{"upgrade new_version", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/upgrade"), `{"new_version":`+jsonStr(v)+`}`)
		}},
		{"invite user ID", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/invite"), `{"user_id":`+jsonStr("@"+v+":localhost")+`}`)
		}},
		{"join alias", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return c("POST", v3("/join/"+url.PathEscape("#"+v+":localhost")), `{}`)
		}},
		{"shared-secret registration displayname", matrix.MaxDisplayNameBytes, func(f *badFixture, v string) badCase {
			n := f.nonce()
			return c("POST", "/_synapse/admin/v1/register", fmt.Sprintf(`{"nonce":%q,"username":"provisioned","password":"pw","displayname":%s,"mac":%q}`,
				n, jsonStr(v), api.SharedSecretMAC("s3cret", n, "provisioned", "pw", false, "")))
		}},
		{"server notice user_id", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: "/_synapse/admin/v1/send_server_notice", token: f.admin,
				body: `{"user_id":` + jsonStr("@"+v+":localhost") + `,"content":{"msgtype":"m.text","body":"hi"}}`}
		}},
		{"server notice type", matrix.MaxEventTypeBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: "/_synapse/admin/v1/send_server_notice", token: f.admin,
				body: `{"user_id":` + jsonStr(f.me) + `,"type":` + jsonStr(v) + `,"content":{}}`}
		}},
		{"server notice state_key", matrix.MaxStateKeyBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: "/_synapse/admin/v1/send_server_notice", token: f.admin,
				body: `{"user_id":` + jsonStr(f.me) + `,"type":"org.example.state","state_key":` + jsonStr(v) + `,"content":{}}`}
		}},
		{"server notice txnId", matrix.MaxTxnIDBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "PUT", path: "/_synapse/admin/v1/send_server_notice/" + v, token: f.admin,
				body: `{"user_id":` + jsonStr(f.me) + `,"content":{"msgtype":"m.text","body":"hi"}}`}
		}},
		{"async upload media ID", matrix.MaxMediaIDBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "PUT", path: "/_matrix/media/v3/upload/localhost/" + v, body: "data", header: map[string]string{"Content-Type": "text/plain"}}
		}},
		{"async upload file name", matrix.MaxFileNameBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "PUT", path: "/_matrix/media/v3/upload/localhost/" + f.media() + "?filename=" + v, body: "data", header: map[string]string{"Content-Type": "text/plain"}}
		}},
		{"async upload content type", matrix.MaxContentTypeBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "PUT", path: "/_matrix/media/v3/upload/localhost/" + f.media(), body: "data", header: map[string]string{"Content-Type": "text/" + v}}
		}},
		{"appservice register username", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: v3("/register"), token: asToken, body: `{"type":"m.login.application_service","username":` + jsonStr("bridge_"+v) + `}`}
		}},
		{"appservice register device_id", matrix.MaxDeviceIDBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: v3("/register"), token: asToken,
				body: `{"type":"m.login.application_service","username":"bridge_` + f.fresh() + `","device_id":` + jsonStr(v) + `}`}
		}},
		{"appservice login user", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: v3("/login"), token: asToken,
				body: `{"type":"m.login.application_service","identifier":{"type":"m.id.user","user":` + jsonStr("@bridge_"+v+":localhost") + `}}`}
		}},
		{"appservice login device_id", matrix.MaxDeviceIDBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: v3("/login"), token: asToken,
				body: `{"type":"m.login.application_service","identifier":{"type":"m.id.user","user":"@bridgebot:localhost"},"device_id":` + jsonStr(v) + `}`}
		}},
		{"appservice masquerade user_id", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return badCase{method: "PUT", path: v3("/profile/" + url.PathEscape("@bridge_"+v+":localhost") + "/displayname?user_id=" + url.QueryEscape("@bridge_"+v+":localhost")),
				token: asToken, body: `{"displayname":"b"}`}
		}},
		{"appservice alias", matrix.MaxIDLength, func(f *badFixture, v string) badCase {
			return badCase{method: "PUT", path: v3("/directory/room/" + url.PathEscape("#bridge_"+v+":localhost")), token: asToken, body: `{"room_id":` + jsonStr(f.rawRoom) + `}`}
		}},
		{"appservice ping transaction_id", matrix.MaxTxnIDBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: "/_matrix/client/v1/appservice/bridge/ping", token: asToken, body: `{"transaction_id":` + jsonStr(v) + `}`}
		}},
		{"event report reason", matrix.MaxReportReasonBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/report/"+f.event), `{"reason":`+jsonStr(v)+`}`)
		}},
		{"room report reason", matrix.MaxReportReasonBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/rooms/"+f.room+"/report"), `{"reason":`+jsonStr(v)+`}`)
		}},
		{"user report reason", matrix.MaxReportReasonBytes, func(f *badFixture, v string) badCase {
			return c("POST", v3("/users/"+url.PathEscape(f.me)+"/report"), `{"reason":`+jsonStr(v)+`}`)
		}},
		{"media file name", matrix.MaxFileNameBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: "/_matrix/media/v3/upload?filename=" + v, body: "data", header: map[string]string{"Content-Type": "text/plain"}}
		}},
		{"media content type", matrix.MaxContentTypeBytes, func(f *badFixture, v string) badCase {
			return badCase{method: "POST", path: "/_matrix/media/v3/upload", body: "data", header: map[string]string{"Content-Type": "text/" + v}}
		}},
	}
}

// badJSONValues are JSON values that no projection can hold, or that no
// client means: each is put into every JSON-storing endpoint's body.
func badJSONValues() map[string]string {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	return map[string]string{
		"lone high surrogate":  `"\ud800"`,
		"lone low surrogate":   `"x\udfffy"`,
		"surrogate in a key":   `{"\udbff":1}`,
		"huge exponent":        `1e200000`,
		"tiny exponent":        `-1e-200000`,
		"zero, huge exponent":  `0e-99999`,
		"beyond a double":      `1e309`,
		"long number literal":  strings.Repeat("9", 200),
		"deep nesting":         deep(matrix.MaxJSONDepth + 1),
		"very deep nesting":    deep(20000),
		"deep nesting, object": strings.Repeat(`{"a":`, matrix.MaxJSONDepth+1) + "1" + strings.Repeat("}", matrix.MaxJSONDepth+1),
	}
}

// jsonSlots are endpoints that store JSON; %V is where a value goes.
func jsonSlots(f *badFixture) []badCase {
	v3 := func(p string) string { return "/_matrix/client/v3" + p }
	return []badCase{
		{name: "global account data", method: "PUT", path: v3("/user/" + f.me + "/account_data/com.example.x"), body: `{"k":%V}`},
		{name: "room account data", method: "PUT", path: v3("/user/" + f.me + "/rooms/" + f.room + "/account_data/com.example.y"), body: `{"k":{"nested":[%V]}}`},
		{name: "filter", method: "POST", path: v3("/user/" + f.me + "/filter"), body: `{"room":{"timeline":{"limit":5}},"event_fields":[%V]}`},
		{name: "filter, unknown field", method: "POST", path: v3("/user/" + f.me + "/filter"), body: `{"org.example":%V}`},
		{name: "tag", method: "PUT", path: v3("/user/" + f.me + "/rooms/" + f.room + "/tags/u.work"), body: `{"order":0.5,"k":%V}`},
		{name: "to-device", method: "PUT", path: v3("/sendToDevice/m.test/json"), body: `{"messages":{"` + f.me + `":{"` + f.dev + `":{"k":%V}}}}`},
		{name: "one-time key", method: "POST", path: v3("/keys/upload"), body: `{"one_time_keys":{"signed_curve25519:AAAA":{"key":"x","k":%V}}}`},
		{name: "cross-signing key", method: "POST", path: v3("/keys/device_signing/upload"), body: `{"master_key":{"user_id":"` + f.me + `","usage":["master"],"keys":{"ed25519:m":"k"},"k":%V}}`},
		{name: "signature upload", method: "POST", path: v3("/keys/signatures/upload"), body: `{"` + f.me + `":{"` + f.dev + `":{"user_id":"` + f.me + `","k":%V}}}`},
		{name: "backup auth_data", method: "POST", path: v3("/room_keys/version"), body: `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"k":%V}}`},
		{name: "backup session_data", method: "PUT", path: v3("/room_keys/keys/" + f.room + "/s1?version=1"), body: `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"k":%V}}`},
		{name: "push rule conditions", method: "PUT", path: v3("/pushrules/global/override/r2"), body: `{"actions":["notify"],"conditions":[{"kind":"event_match","k":%V}]}`},
		{name: "push rule actions", method: "PUT", path: v3("/pushrules/global/override/.m.rule.master/actions"), body: `{"actions":[%V]}`},
		{name: "profile", method: "PUT", path: v3("/profile/" + f.me + "/displayname"), body: `{"displayname":"x","k":%V}`},
		{name: "presence", method: "PUT", path: v3("/presence/" + f.me + "/status"), body: `{"presence":"online","k":%V}`},
		{name: "pusher data", method: "POST", path: v3("/pushers/set"), body: `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"n","device_display_name":"d","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify","k":%V}}`},
		{name: "message", method: "PUT", path: v3("/rooms/" + f.room + "/send/m.room.message/json"), body: `{"msgtype":"m.text","body":"x","k":%V}`},
		{name: "state", method: "PUT", path: v3("/rooms/" + f.room + "/state/m.room.topic/"), body: `{"topic":"x","k":%V}`},
		{name: "createRoom", method: "POST", path: v3("/createRoom"), body: `{"creation_content":{"k":%V}}`},
		{name: "receipt", method: "POST", path: v3("/rooms/" + f.room + "/receipt/m.read/" + f.event), body: `{"k":%V}`},
		{name: "device", method: "PUT", path: v3("/devices/" + f.dev), body: `{"display_name":"x","k":%V}`},
		{name: "register", method: "POST", path: v3("/register"), body: `{"username":"` + f.fresh() + `","password":"pw","auth":{"type":"m.login.dummy"},"k":%V}`},
		{name: "server notice content", method: "POST", path: "/_synapse/admin/v1/send_server_notice", token: f.admin, body: `{"user_id":"` + f.me + `","content":{"msgtype":"m.text","body":"x","k":%V}}`},
		{name: "appservice register", method: "POST", path: v3("/register"), token: asToken, body: `{"type":"m.login.application_service","username":"bridge_` + f.fresh() + `","k":%V}`},
		{name: "appservice masqueraded message", method: "PUT", path: v3("/rooms/" + f.room + "/send/m.room.message/asjson?user_id=" + url.QueryEscape("@bridgebot:localhost")), token: asToken, body: `{"msgtype":"m.text","body":"x","k":%V}`},
		{name: "appservice ping", method: "POST", path: "/_matrix/client/v1/appservice/bridge/ping", token: asToken, body: `{"transaction_id":"t","k":%V}`},
		{name: "event report", method: "POST", path: v3("/rooms/" + f.room + "/report/" + f.event), body: `{"reason":"x","k":%V}`},
		{name: "event report score", method: "POST", path: v3("/rooms/" + f.room + "/report/" + f.event), body: `{"reason":"x","score":%V}`},
	}
}

// Nothing a client sends is appended unless the projection can hold it
// (invariant 9): for every endpoint that takes client strings or JSON and
// every kind of bad value, the answer is a 4xx with a Matrix errcode,
// never a 5xx, and the log does not move. Afterwards the server still
// serves, the projection has applied the whole log (a record it could not
// apply would have stopped the projector), and a replay equals it.
func TestBadInputNeverReachesTheLog(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s3cret"
	cfg.ApplyTimeout = 3 * time.Second // a failing case should not take long
	cfg.Appservices = appserviceSet(t, bridgeYAML("null"))
	base := env.Serve(cfg).URL
	c := apitest.NewClient(t, base)
	c.Register("mallory", "pw")
	nonce := func() string { return c.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce") }
	n := nonce()
	admin := c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n, "username": "boss", "password": "pw", "admin": true,
		"mac": api.SharedSecretMAC("s3cret", n, "boss", "pw", true, "")}).Str("access_token")
	room := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	event := c.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/ok1", map[string]any{"msgtype": "m.text", "body": "hi"}).Str("event_id")
	if v := c.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{
		"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}}).Str("version"); v != "1" {
		t.Fatalf("backup version %q", v)
	}
	f := &badFixture{me: c.UserID, dev: c.Device, room: esc(room), event: esc(event), rawRoom: room, nonce: nonce, admin: admin,
		media: func() string {
			uri := c.MustDo("POST", "/_matrix/media/v1/create", nil).Str("content_uri")
			return uri[strings.LastIndexByte(uri, '/')+1:]
		}}
	// The application service's sender is in the room, so that its
	// masqueraded message reaches the content checks.
	c.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(room)+"/invite", map[string]any{"user_id": "@bridgebot:localhost"})
	bot := apitest.NewClient(t, base)
	bot.Token = asToken
	bot.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(room)+"/join?user_id="+url.QueryEscape("@bridgebot:localhost"), map[string]any{})

	var cases []badCase
	for _, s := range idSlots() {
		for _, v := range overLong(s.limit) {
			bc := s.build(f, v)
			bc.name = fmt.Sprintf("%s of %d bytes", s.name, len(v))
			cases = append(cases, bc)
		}
	}
	values := badJSONValues()
	for _, s := range jsonSlots(f) {
		for vname, v := range values {
			bc := s
			bc.name = s.name + ": " + vname
			bc.body = strings.Replace(s.body, "%V", v, 1)
			cases = append(cases, bc)
		}
	}

	log := env.Conn()
	heads := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, s := range []string{eventlog.StreamRooms, eventlog.StreamAccounts, eventlog.StreamReceipts, eventlog.StreamNonces} {
			h, err := log.Head(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			out[s] = h
		}
		return out
	}
	before := heads()
	failures := 0
	for _, bc := range cases {
		status, body := doRaw(t, c, bc)
		var e struct {
			Errcode string `json:"errcode"`
		}
		_ = json.Unmarshal(body, &e)
		failed := false
		if status < 400 || status >= 500 || !strings.HasPrefix(e.Errcode, "M_") {
			t.Errorf("%s: %s %.120s: %d %.300s, want a 4xx with a Matrix errcode", bc.name, bc.method, bc.path, status, body)
			failed = true
		}
		if after := heads(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("%s: appended: the log moved from %v to %v", bc.name, before, after)
			before, failed = after, true
		}
		if failed {
			// Once a record the projection cannot apply is on the log,
			// every later write waits for it in vain (ApplyTimeout).
			if failures++; failures == 10 {
				t.Fatalf("stopping after %d failed cases", failures)
			}
		}
	}
	t.Logf("%d bad requests", len(cases))

	// Still serving: a message goes through and /sync shows it.
	id := c.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/ok2", map[string]any{"msgtype": "m.text", "body": "still here"}).Str("event_id")
	if s := c.MustDo("GET", "/_matrix/client/v3/sync", nil); !strings.Contains(string(s.Raw), id) {
		t.Fatalf("sync after the bad requests lacks %s: %.500s", id, s.Raw)
	}
	// The projection has applied everything on the log, and a replay
	// equals it.
	projectionReplays(t, env, 64)
}

// doRaw sends a bad case as is (the body verbatim, its own headers).
func doRaw(t *testing.T, c *apitest.Client, bc badCase) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if bc.body != "" {
		rd = strings.NewReader(bc.body)
	}
	req, err := http.NewRequest(bc.method, c.Base+bc.path, rd)
	if err != nil {
		t.Fatalf("%s: %v", bc.name, err)
	}
	token := c.Token
	if bc.token != "" {
		token = bc.token
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range bc.header {
		req.Header.Set(k, v)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", bc.name, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s: %v", bc.name, err)
	}
	return res.StatusCode, b
}
