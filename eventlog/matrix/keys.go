package matrix

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// KeyID identifies a signing key: the algorithm, a colon and the key's
// version, e.g. "ed25519:a_Xyz1". The version may hold only [a-zA-Z0-9_]
// (server-server API, "Retrieving server keys").
type KeyID string

// ParseKeyID validates an ed25519 key ID, the only algorithm Strand signs
// with.
func ParseKeyID(s string) (KeyID, error) {
	version, ok := strings.CutPrefix(s, "ed25519:")
	if !ok || version == "" || len(s) > MaxIDLength {
		return "", fmt.Errorf("key ID %q: must look like ed25519:<version>", s)
	}
	for i := 0; i < len(version); i++ {
		c := version[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return "", fmt.Errorf("key ID %q: version may hold only a-z, A-Z, 0-9 and _", s)
		}
	}
	return KeyID(s), nil
}

// Version returns the part after "ed25519:".
func (k KeyID) Version() string {
	_, v, _ := strings.Cut(string(k), ":")
	return v
}

// KeyPair is a server's ed25519 signing key with its key ID. It holds the
// private key, so it is never logged: String prints only the ID and the
// public key.
type KeyPair struct {
	id   KeyID
	priv ed25519.PrivateKey
}

// GenerateKeyPair makes a new random key pair with ID "ed25519:"+version.
func GenerateKeyPair(version string) (*KeyPair, error) {
	id, err := ParseKeyID("ed25519:" + version)
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return &KeyPair{id: id, priv: priv}, nil
}

// NewKeyPairFromSeed derives a key pair from a 32-byte ed25519 seed, the
// form the spec's test vectors give keys in.
func NewKeyPairFromSeed(id KeyID, seed []byte) (*KeyPair, error) {
	if _, err := ParseKeyID(string(id)); err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("ed25519 seed must be %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	return &KeyPair{id: id, priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// MarshalText returns the key in the one-line file format Synapse and
// other servers use for signing keys: "ed25519 <version> <seed>", the seed
// in unpadded base64, with a trailing newline. The caller stores it (with
// mode 0600); this package does no I/O.
func (k *KeyPair) MarshalText() ([]byte, error) {
	if k == nil || len(k.priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("marshal key pair: no key")
	}
	return fmt.Appendf(nil, "ed25519 %s %s\n", k.id.Version(), base64.RawStdEncoding.EncodeToString(k.priv.Seed())), nil
}

// ParseKeyPair reads the form MarshalText writes. Surrounding whitespace
// and a padded seed are accepted; further lines (other keys) are not.
func ParseKeyPair(text []byte) (*KeyPair, error) {
	fields := strings.Fields(string(text))
	if len(fields) != 3 || fields[0] != "ed25519" {
		return nil, fmt.Errorf("parse signing key: want one line \"ed25519 <version> <base64 seed>\"")
	}
	seed, err := DecodeBase64(fields[2])
	if err != nil {
		return nil, fmt.Errorf("parse signing key: seed: %w", err)
	}
	return NewKeyPairFromSeed(KeyID("ed25519:"+fields[1]), seed)
}

// ID returns the key ID, e.g. "ed25519:1".
func (k *KeyPair) ID() KeyID { return k.id }

// Public returns the public key.
func (k *KeyPair) Public() ed25519.PublicKey {
	pub, _ := k.priv.Public().(ed25519.PublicKey)
	return pub
}

// PublicBase64 returns the public key in unpadded base64, as published in
// verify_keys.
func (k *KeyPair) PublicBase64() string { return base64.RawStdEncoding.EncodeToString(k.Public()) }

// Sign returns the ed25519 signature of msg.
func (k *KeyPair) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// String shows the key ID and public key, never the private key.
func (k *KeyPair) String() string { return string(k.id) + " " + k.PublicBase64() }

// DecodeBase64 decodes the spec's unpadded base64, accepting padding and
// the URL-safe alphabet as well, as the appendix asks receivers to.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	return enc.DecodeString(s)
}

// SignJSON signs the JSON object obj as entity (a server name, usually)
// with key, following "Signing JSON" in the appendices: the signature
// covers the canonical form of obj without its signatures and unsigned
// members, and is merged into any signatures already present. The result is
// canonical JSON.
func SignJSON(obj []byte, entity string, key *KeyPair) ([]byte, error) {
	canon, err := CanonicalJSON(obj)
	if err != nil {
		return nil, err
	}
	if !isObject(canon) {
		return nil, BadJSON("sign JSON: not an object")
	}
	return signCanonical(canon, entity, key)
}

func signCanonical(canon []byte, entity string, key *KeyPair) ([]byte, error) {
	payload, sigs, err := signable(canon)
	if err != nil {
		return nil, BadJSON("sign JSON: %v", err)
	}
	merged, err := addSignature(sigs, entity, key.id, key.Sign(payload))
	if err != nil {
		return nil, err
	}
	out, err := withMembers(make([]byte, 0, len(canon)+len(merged)+16), canon, func(k, _ []byte) bool {
		return string(k) == "signatures"
	}, []newMember{{key: "signatures", val: merged}})
	if err != nil {
		return nil, BadJSON("sign JSON: %v", err)
	}
	return out, nil
}

// addSignature returns the canonical signatures object sigs (nil for none)
// with sig recorded under entity and keyID.
func addSignature(sigs []byte, entity string, keyID KeyID, sig []byte) ([]byte, error) {
	if sigs == nil {
		sigs = []byte("{}")
	}
	if !isObject(sigs) {
		return nil, BadJSON("signatures is not an object")
	}
	entityKey, ok := appendString(nil, entity)
	if !ok {
		return nil, BadJSON("signing entity %q is not valid UTF-8", entity)
	}
	var old []byte
	_ = eachMember(sigs, func(k, v []byte) (bool, error) {
		if bytes.Equal(k, entityKey[1:len(entityKey)-1]) {
			old = v
			return false, nil
		}
		return true, nil
	})
	if old == nil {
		old = []byte("{}")
	}
	if !isObject(old) {
		return nil, BadJSON("signatures of %q is not an object", entity)
	}
	sigJSON, _ := appendString(nil, base64.RawStdEncoding.EncodeToString(sig))
	inner, err := withMembers(nil, old, func(k, _ []byte) bool { return string(k) == string(keyID) },
		[]newMember{{key: string(keyID), val: sigJSON}})
	if err != nil {
		return nil, BadJSON("signatures: %v", err)
	}
	out, err := withMembers(nil, sigs, func(k, _ []byte) bool { return bytes.Equal(k, entityKey[1:len(entityKey)-1]) },
		[]newMember{{key: entity, val: inner}})
	if err != nil {
		return nil, BadJSON("signatures: %v", err)
	}
	return out, nil
}

// VerifyJSON checks that obj carries a valid signature by entity with the
// key keyID, whose public key is pub ("Checking for a Signature").
func VerifyJSON(obj []byte, entity string, keyID KeyID, pub ed25519.PublicKey) error {
	canon, err := CanonicalJSON(obj)
	if err != nil {
		return err
	}
	if !isObject(canon) {
		return BadJSON("verify JSON: not an object")
	}
	return verifyCanonical(canon, entity, keyID, pub)
}

func verifyCanonical(canon []byte, entity string, keyID KeyID, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return Forbidden("verify signature: bad public key for %s %s", entity, keyID)
	}
	payload, sigs, err := signable(canon)
	if err != nil {
		return BadJSON("verify signature: %v", err)
	}
	sig, ok := findSignature(sigs, entity, keyID)
	if !ok {
		return Forbidden("no signature by %s with key %s", entity, keyID)
	}
	if !ed25519.Verify(pub, payload, sig) {
		return Forbidden("bad signature by %s with key %s", entity, keyID)
	}
	return nil
}

// findSignature returns the decoded signature under entity and keyID in the
// canonical signatures object sigs.
func findSignature(sigs []byte, entity string, keyID KeyID) ([]byte, bool) {
	if !isObject(sigs) {
		return nil, false
	}
	var sig []byte
	found := false
	_ = eachMember(sigs, func(k, v []byte) (bool, error) {
		name, ok := decodeString(append(append([]byte{'"'}, k...), '"'))
		if !ok || name != entity || !isObject(v) {
			return true, nil
		}
		if s, ok := stringMember(v, string(keyID)); ok {
			if b, err := DecodeBase64(s); err == nil && len(b) == ed25519.SignatureSize {
				sig, found = b, true
			}
		}
		return false, nil
	})
	return sig, found
}

// newMember is a member to add to a canonical object: a decoded key and a
// canonical value.
type newMember struct {
	key string
	val []byte
}

// withMembers appends to dst the canonical object obj without the members
// drop selects, and with add merged in key order. add must be sorted by key
// and hold no key that remains in obj. Keys compare decoded, so the result
// is canonical.
func withMembers(dst, obj []byte, drop func(key, val []byte) bool, add []newMember) ([]byte, error) {
	var o objectBuilder
	o.begin(dst)
	emitUntil := func(key []byte) error { // emit pending additions ordered before key
		for len(add) > 0 {
			if key != nil && strings.Compare(add[0].key, string(key)) >= 0 {
				return nil
			}
			enc, ok := appendString(nil, add[0].key)
			if !ok {
				return fmt.Errorf("key %q is not valid UTF-8", add[0].key)
			}
			o.member(enc[1:len(enc)-1], add[0].val)
			add = add[1:]
		}
		return nil
	}
	err := eachMember(obj, func(k, v []byte) (bool, error) {
		if drop != nil && drop(k, v) {
			return true, nil
		}
		decoded := k
		if bytes.IndexByte(k, '\\') >= 0 {
			s, ok := decodeString(append(append([]byte{'"'}, k...), '"'))
			if !ok {
				return false, errMalformed
			}
			decoded = []byte(s)
		}
		if err := emitUntil(decoded); err != nil {
			return false, err
		}
		o.member(k, v)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if err := emitUntil(nil); err != nil {
		return nil, err
	}
	return o.end(), nil
}

// signable splits canonical JSON into what a signature covers (the object
// without "signatures" and "unsigned", still canonical) and its
// "signatures" member, as the spec's signing algorithm defines.
func signable(canon []byte) (payload, sigs []byte, err error) {
	payload, err = withMembers(nil, canon, func(k, v []byte) bool {
		switch string(k) {
		case "signatures":
			sigs = v
			return true
		case "unsigned":
			return true
		}
		return false
	}, nil)
	return payload, sigs, err
}
