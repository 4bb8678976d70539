package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// End-to-end encryption: the server stores and relays public keys and
// to-device messages for clients; it never holds a private key or sees
// plaintext. Every change is a record on the ACCOUNTS stream.

// maxClaimAttempts bounds how often a claim re-chooses after another
// write to the key owner's subject won the race.
const maxClaimAttempts = 16

// signedObject is the part of a signed key object the server checks.
type signedObject struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Usage      []string                     `json:"usage"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// canonicalObject re-encodes a JSON object canonically, so that stored
// keys compare byte for byte; anything but an object is M_BAD_JSON.
func canonicalObject(raw json.RawMessage, what string) (json.RawMessage, error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return nil, matrix.BadJSON("%s must be an object", what)
	}
	c, err := matrix.CanonicalJSON(raw)
	if err != nil {
		return nil, matrix.BadJSON("%s: %v", what, err)
	}
	return c, nil
}

// checkKeyIDs bounds the key IDs of a signed key object (its keys and
// its signatures): they are stored, and the signature IDs of other
// uploads become keys of key_signatures.
func (o *signedObject) checkKeyIDs(what string) error {
	for id := range o.Keys {
		if err := matrix.CheckLength(what+": a key ID", id, matrix.MaxKeyIDBytes); err != nil {
			return err
		}
	}
	for _, sigs := range o.Signatures {
		for id := range sigs {
			if err := matrix.CheckLength(what+": a signing key ID", id, matrix.MaxKeyIDBytes); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkKeyMap validates one_time_keys or fallback_keys: "algorithm:id"
// to a key (a string, or a signed object), canonicalised.
func checkKeyMap(m map[string]json.RawMessage, what string) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(m))
	for id, raw := range m {
		if err := matrix.CheckLength(what+": a key ID", id, matrix.MaxKeyIDBytes); err != nil {
			return nil, err
		}
		alg, kid, ok := strings.Cut(id, ":")
		if !ok || alg == "" || kid == "" {
			return nil, matrix.InvalidParam("%s: key ID %q is not algorithm:key_id", what, id)
		}
		t := bytes.TrimSpace(raw)
		if len(t) == 0 || (t[0] != '{' && t[0] != '"') {
			return nil, matrix.BadJSON("%s: key %s must be a string or an object", what, id)
		}
		c, err := matrix.CanonicalJSON(raw)
		if err != nil {
			return nil, matrix.BadJSON("%s: key %s: %v", what, id, err)
		}
		out[id] = c
	}
	return out, nil
}

// POST /_matrix/client/v3/keys/upload
func (s *Server) uploadKeys(w http.ResponseWriter, r *http.Request) error {
	if err := requireDevice(r); err != nil {
		return err
	}
	ss := session(r)
	var req struct {
		DeviceKeys      json.RawMessage            `json:"device_keys"`
		OneTimeKeys     map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys    map[string]json.RawMessage `json:"fallback_keys"`
		FallbackKeysMSC map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	rec := &eventlog.KeysUploaded{UserID: ss.UserID, DeviceID: ss.DeviceID}
	if len(req.DeviceKeys) > 0 && string(bytes.TrimSpace(req.DeviceKeys)) != "null" {
		c, err := canonicalObject(req.DeviceKeys, "device_keys")
		if err != nil {
			return err
		}
		var dk signedObject
		if err := json.Unmarshal(c, &dk); err != nil {
			return matrix.BadJSON("device_keys: %v", err)
		}
		if err := dk.checkKeyIDs("device_keys"); err != nil {
			return err
		}
		if dk.UserID != ss.UserID || dk.DeviceID != ss.DeviceID {
			return matrix.InvalidParam("device_keys must be for user %s and device %s", ss.UserID, ss.DeviceID)
		}
		if len(dk.Algorithms) == 0 || len(dk.Keys) == 0 || len(dk.Signatures[ss.UserID]) == 0 {
			// Required fields missing: JSON of the wrong shape, which is
			// M_BAD_JSON (the IDs above are present but wrong: a bad value).
			return matrix.BadJSON("device_keys needs algorithms, keys and the user's signature")
		}
		old, err := s.store.DeviceKeysOf(r.Context(), ss.UserID, ss.DeviceID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !canonicalEqual(old, c) { // Postgres re-formats stored jsonb
			rec.DeviceKeys = c
		}
	}
	otks, err := checkKeyMap(req.OneTimeKeys, "one_time_keys")
	if err != nil {
		return err
	}
	if len(otks) > 0 {
		// A key ID already held must come with the same key: a client
		// re-uploading after a lost response is fine, a different key
		// under an old ID is a client bug the spec has refused.
		ids := make([]string, 0, len(otks))
		for id := range otks {
			ids = append(ids, id)
		}
		held, err := s.store.OneTimeKeyIDs(r.Context(), ss.UserID, ss.DeviceID, ids)
		if err != nil {
			return err
		}
		for id, k := range held {
			if !canonicalEqual(k, otks[id]) {
				return matrix.InvalidParam("one-time key %s already exists with a different key", id)
			}
			delete(otks, id)
		}
		if len(otks) > 0 {
			rec.OneTimeKeys = otks
		}
	}
	fb := req.FallbackKeys
	if fb == nil {
		fb = req.FallbackKeysMSC
	}
	if fbs, err := checkKeyMap(fb, "fallback_keys"); err != nil {
		return err
	} else if len(fbs) > 0 {
		rec.FallbackKeys = fbs
	}
	if rec.DeviceKeys != nil || rec.OneTimeKeys != nil || rec.FallbackKeys != nil {
		if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
			return err
		}
	}
	counts, err := s.store.OneTimeKeyCounts(r.Context(), ss.UserID, ss.DeviceID)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
	return nil
}

// localUsers validates the user IDs keying a request's map and returns
// those of this server, sorted (others cannot be answered without
// federation).
func localUsers[V any](s *Server, m map[string]V) ([]string, error) {
	var out []string
	for id := range m {
		uid, err := matrix.ParseUserID(id)
		if err != nil {
			return nil, matrix.InvalidParam("invalid user ID %q: %v", id, err)
		}
		if uid.Server() == s.cfg.ServerName {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// POST /_matrix/client/v3/keys/query
func (s *Server) queryKeys(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
		Token      string              `json:"token"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	local, err := localUsers(s, req.DeviceKeys)
	if err != nil {
		return err
	}
	want := make(map[string][]string, len(local))
	for _, u := range local {
		want[u] = req.DeviceKeys[u]
	}
	res, err := s.store.QueryKeys(r.Context(), session(r).UserID, want)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"device_keys": res.DeviceKeys, "master_keys": res.MasterKeys, "self_signing_keys": res.SelfSigningKeys,
		"user_signing_keys": res.UserSigningKeys, "failures": map[string]any{},
	})
	return nil
}

// POST /_matrix/client/v3/keys/claim
func (s *Server) claimKeys(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	local, err := localUsers(s, req.OneTimeKeys)
	if err != nil {
		return err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	failures := map[string]any{}
	for _, u := range local {
		got, err := s.claimFrom(r.Context(), u, req.OneTimeKeys[u])
		if err != nil {
			if len(out) == 0 {
				return err
			}
			// Keys already claimed for earlier users are consumed: hand
			// them out rather than fail the request and waste them; the
			// client asks again for the rest.
			s.logger.Warn("key claim failed part-way", "user_id", u, "err", err)
			failures[string(s.cfg.ServerName)] = map[string]string{"errcode": "M_UNKNOWN", "error": "claiming the remaining keys failed; retry for them"}
			break
		}
		if len(got) == 0 {
			continue
		}
		out[u] = map[string]map[string]json.RawMessage{}
		for device, k := range got {
			out[u][device] = map[string]json.RawMessage{k.KeyID: k.Key}
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": out, "failures": failures})
	return nil
}

// claimFrom takes one key per requested device of user. The choice is
// made on the projection as of the user's subject sequence and appended
// expecting that sequence, so two claims never take the same one-time
// key: the loser chooses again.
func (s *Server) claimFrom(ctx context.Context, user string, want map[string]string) (map[string]store.ClaimedKey, error) {
	if len(want) == 0 {
		return nil, nil
	}
	subject := eventlog.UserSubject(user)
	for attempt := 0; attempt < maxClaimAttempts; attempt++ {
		last, err := s.log.LastSeq(ctx, eventlog.StreamAccounts, subject)
		if err != nil {
			return nil, logUnavailable(err)
		}
		if err := s.awaitPosition(ctx, eventlog.StreamAccounts, last); err != nil {
			return nil, err
		}
		chosen, err := s.store.ChooseClaims(ctx, user, want)
		if err != nil {
			return nil, err
		}
		if len(chosen) == 0 {
			return nil, nil
		}
		rec := &eventlog.KeysClaimed{UserID: user}
		devices := make([]string, 0, len(chosen))
		for d := range chosen {
			devices = append(devices, d)
		}
		slices.Sort(devices)
		for _, d := range devices {
			rec.Claims = append(rec.Claims, eventlog.ClaimedKey{DeviceID: d, KeyID: chosen[d].KeyID, Fallback: chosen[d].Fallback})
		}
		expect := last
		err = s.appendAccount(ctx, user, rec, &expect)
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return chosen, nil
	}
	return nil, matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "the keys of %s are too busy; retry", user)
}

// GET /_matrix/client/v3/keys/changes
func (s *Server) keyChanges(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, err := eventlog.ParseSyncToken(q.Get("from"))
	if err != nil {
		return err
	}
	to, err := eventlog.ParseSyncToken(q.Get("to"))
	if err != nil {
		return err
	}
	user := session(r).UserID
	changed, left := []string{}, []string{}
	err = s.store.SyncSnapshot(r.Context(), func(tx *store.SyncTx) error {
		keys, err := tx.DeviceListChanges(r.Context(), user, from.Accounts, to.Accounts)
		if err != nil {
			return err
		}
		joined, departed, err := tx.MembershipMoves(r.Context(), user,
			eventlog.EventPos(from.Rooms+1, 0), eventlog.EventPos(to.Rooms+1, 0))
		if err != nil {
			return err
		}
		sharing, err := tx.SharingRooms(r.Context(), user, departed)
		if err != nil {
			return err
		}
		for _, u := range departed {
			if !sharing[u] {
				left = append(left, u)
			}
		}
		changed = append(append(changed, keys...), joined...)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(changed)
	slices.Sort(left)
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"changed": slices.Compact(changed), "left": slices.Compact(left)})
	return nil
}

// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
func (s *Server) sendToDevice(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	typ, err := eventTypeVar(r)
	if err != nil {
		return err
	}
	txn := pathVar(r, "txnId")
	if err := matrix.CheckLength("the transaction ID", txn, matrix.MaxTxnIDBytes); err != nil {
		return err
	}
	if done, err := s.store.ToDeviceTxn(r.Context(), ss.UserID, ss.DeviceID, txn); err != nil {
		return err
	} else if done {
		matrix.WriteJSON(w, http.StatusOK, map[string]any{})
		return nil
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	local, err := localUsers(s, req.Messages)
	if err != nil {
		return err
	}
	rec := &eventlog.ToDeviceSent{Sender: ss.UserID, SenderDevice: ss.DeviceID, TxnID: txn, Type: typ,
		Messages: map[string]map[string]json.RawMessage{}}
	for _, u := range local {
		for device, content := range req.Messages[u] {
			c, err := canonicalObject(content, "message content")
			if err != nil {
				return err
			}
			if err := matrix.CheckLength("a device ID", device, matrix.MaxDeviceIDBytes); err != nil {
				return err
			}
			if rec.Messages[u] == nil {
				rec.Messages[u] = map[string]json.RawMessage{}
			}
			rec.Messages[u][device] = c
		}
	}
	opts := eventlog.AppendOptions{MsgID: "todevice:" + ss.UserID + "|" + ss.DeviceID + "|" + txn}
	seq, err := s.log.Append(r.Context(), eventlog.UserSubject(ss.UserID), rec, opts)
	if err != nil {
		return logUnavailable(err)
	}
	if err := s.awaitApplied(r.Context(), eventlog.StreamAccounts, seq); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// crossSigningTypes are the keys of a device_signing/upload body and the
// usage each key must declare.
var crossSigningTypes = []struct{ field, usage string }{
	{"master_key", "master"}, {"self_signing_key", "self_signing"}, {"user_signing_key", "user_signing"},
}

// POST /_matrix/client/v3/keys/device_signing/upload
func (s *Server) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	var req map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	rec := &eventlog.CrossSigningKeysSet{UserID: ss.UserID}
	replacing := false
	for _, t := range crossSigningTypes {
		raw, ok := req[t.field]
		if !ok || string(bytes.TrimSpace(raw)) == "null" {
			continue
		}
		c, err := canonicalObject(raw, t.field)
		if err != nil {
			return err
		}
		var k signedObject
		if err := json.Unmarshal(c, &k); err != nil {
			return matrix.BadJSON("%s: %v", t.field, err)
		}
		if err := k.checkKeyIDs(t.field); err != nil {
			return err
		}
		if k.UserID != ss.UserID || !slices.Contains(k.Usage, t.usage) || len(k.Keys) != 1 {
			return matrix.InvalidParam("%s must be one key of user %s with usage %s", t.field, ss.UserID, t.usage)
		}
		old, err := s.store.CrossSigningKey(r.Context(), ss.UserID, t.usage)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case !canonicalEqual(old, c):
			replacing = true
		}
		switch t.usage {
		case "master":
			rec.Master = c
		case "self_signing":
			rec.SelfSigning = c
		case "user_signing":
			rec.UserSigning = c
		}
	}
	if replacing {
		// Setting up cross-signing the first time needs no more than the
		// access token; replacing keys already published needs the
		// password.
		var auth struct {
			Auth *authData `json:"auth"`
		}
		if a, ok := req["auth"]; ok {
			_ = json.Unmarshal(a, &auth.Auth)
		}
		if err := s.requirePassword(r.Context(), ss.UserID, auth.Auth); err != nil {
			return err
		}
	}
	if rec.Master != nil || rec.SelfSigning != nil || rec.UserSigning != nil {
		if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
			return err
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// POST /_matrix/client/v3/keys/signatures/upload
//
// uploadSignatures stores the signatures the caller made of keys (their
// own devices and cross-signing keys, or other users' master keys).
// Clients verify every signature themselves; the server relays them.
func (s *Server) uploadSignatures(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	var req map[string]map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	local, err := localUsers(s, req)
	if err != nil {
		return err
	}
	rec := &eventlog.SignaturesAdded{UserID: ss.UserID, Signatures: map[string]map[string]json.RawMessage{}}
	for _, u := range local {
		for keyID, raw := range req[u] {
			// The signed key's ID and the caller's signing key IDs are
			// the key of key_signatures: bounded, or refused.
			if err := matrix.CheckLength("a signed key ID", keyID, matrix.MaxKeyIDBytes); err != nil {
				return err
			}
			var obj signedObject
			if err := json.Unmarshal(raw, &obj); err != nil {
				return matrix.BadJSON("signed key %s of %s: %v", keyID, u, err)
			}
			if err := obj.checkKeyIDs("signed key " + keyID); err != nil {
				return err
			}
			mine := obj.Signatures[ss.UserID]
			if len(mine) == 0 {
				continue
			}
			b, _ := json.Marshal(map[string]map[string]string{ss.UserID: mine})
			if rec.Signatures[u] == nil {
				rec.Signatures[u] = map[string]json.RawMessage{}
			}
			rec.Signatures[u][keyID] = b
		}
	}
	if len(rec.Signatures) > 0 {
		if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
			return err
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"failures": map[string]any{}})
	return nil
}
