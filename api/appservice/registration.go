// Package appservice is Strand's side of the Application Service API:
// registration files (parsing, validation, namespace matching and
// exclusivity), the worker that delivers the log's events to each service
// in transactions, and the queries the homeserver makes to a service. The
// client-server endpoints application services use (as_token auth,
// masquerading, /register, /login, ping, /thirdparty) are in package api,
// which imports this one; this package never imports api.
package appservice

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"strand/eventlog/matrix"
)

// Namespace is one entry of a registration's users, aliases or rooms.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
	re        *regexp.Regexp
}

// Namespaces are the IDs a service is interested in (and, where
// exclusive, owns).
type Namespaces struct {
	Users   []Namespace `yaml:"users"`
	Aliases []Namespace `yaml:"aliases"`
	Rooms   []Namespace `yaml:"rooms"`
}

// Registration is one application service's registration file.
type Registration struct {
	ID              string     `yaml:"id"`
	URL             *string    `yaml:"url"`
	ASToken         string     `yaml:"as_token"`
	HSToken         string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	Namespaces      Namespaces `yaml:"namespaces"`
	// RateLimited: whether requests made as the service's namespace users
	// are rate-limited (default true). The sender is never limited.
	RateLimited *bool    `yaml:"rate_limited"`
	Protocols   []string `yaml:"protocols"`
	// ReceiveEphemeral asks for typing notices, receipts and presence in
	// transactions (MSC2409's unstable name is accepted too, as bridges
	// written before Matrix 1.13 still send it).
	ReceiveEphemeral         bool `yaml:"receive_ephemeral"`
	ReceiveEphemeralUnstable bool `yaml:"de.sorunome.msc2409.push_ephemeral"`

	// Sender is the user ID of sender_localpart on this server.
	Sender string `yaml:"-"`
	// Source is the file it was read from, for error messages.
	Source string `yaml:"-"`
}

// HasURL reports whether the service wants traffic (url is not null or
// empty).
func (r *Registration) HasURL() bool { return r.URL != nil && *r.URL != "" }

// Ephemeral reports whether the service asked for ephemeral data.
func (r *Registration) Ephemeral() bool { return r.ReceiveEphemeral || r.ReceiveEphemeralUnstable }

// LimitsUsers reports whether requests made as the service's namespace
// users are rate-limited.
func (r *Registration) LimitsUsers() bool { return r.RateLimited == nil || *r.RateLimited }

// MaxIDBytes bounds a registration's id, which becomes part of the key
// that holds the service's delivery position.
const MaxIDBytes = 255

// Parse reads one registration file's contents for a server named
// server. Every error names what is wrong.
func Parse(data []byte, server matrix.ServerName) (*Registration, error) {
	var r Registration
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("not a valid registration (YAML): %w", err)
	}
	// The required fields, by their raw presence: "url: null" is allowed
	// (a service that wants no traffic), a missing url is not.
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a valid registration (YAML): %w", err)
	}
	for _, f := range []string{"id", "url", "as_token", "hs_token", "sender_localpart", "namespaces"} {
		if _, ok := raw[f]; !ok {
			return nil, fmt.Errorf("missing required field %q", f)
		}
	}
	switch {
	case r.ID == "":
		return nil, errors.New(`"id" must not be empty`)
	case len(r.ID) > MaxIDBytes:
		// The id names the service's delivery position in a KV key.
		return nil, fmt.Errorf(`"id" is longer than %d bytes`, MaxIDBytes)
	case strings.ContainsFunc(r.ID, func(c rune) bool { return c < ' ' || c == 0x7f }):
		return nil, errors.New(`"id" must not contain control characters`)
	case r.ASToken == "":
		return nil, errors.New(`"as_token" must not be empty`)
	case r.HSToken == "":
		return nil, errors.New(`"hs_token" must not be empty`)
	case r.ASToken == r.HSToken:
		return nil, errors.New(`"as_token" and "hs_token" must differ`)
	case r.SenderLocalpart == "" || strings.Contains(r.SenderLocalpart, ":"):
		return nil, fmt.Errorf(`"sender_localpart" %q is not a localpart`, r.SenderLocalpart)
	}
	uid, err := matrix.ParseUserID("@" + r.SenderLocalpart + ":" + string(server))
	if err != nil {
		return nil, fmt.Errorf(`"sender_localpart" %q is not a valid localpart: %v`, r.SenderLocalpart, err)
	}
	r.Sender = string(uid)
	if r.HasURL() {
		u, err := url.Parse(*r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf(`"url" %q must be an http or https URL (or null)`, *r.URL)
		}
	}
	for kind, list := range map[string][]Namespace{"users": r.Namespaces.Users, "aliases": r.Namespaces.Aliases, "rooms": r.Namespaces.Rooms} {
		for i := range list {
			if list[i].Regex == "" {
				return nil, fmt.Errorf("namespaces.%s[%d]: missing \"regex\"", kind, i)
			}
			// The whole ID must match: "@_irc_.*" must not take in
			// "@bob:x" because its server part happens to match.
			re, err := regexp.Compile(`^(?:` + list[i].Regex + `)$`)
			if err != nil {
				return nil, fmt.Errorf("namespaces.%s[%d]: bad regex %q: %v", kind, i, list[i].Regex, err)
			}
			list[i].re = re
		}
	}
	for _, p := range r.Protocols {
		if p == "" || strings.ContainsAny(p, "/ ") {
			return nil, fmt.Errorf("protocols: %q is not a protocol name", p)
		}
	}
	return &r, nil
}

// Set is the server's application services, checked together.
type Set struct {
	list []*Registration
	byAS map[string]*Registration
	byID map[string]*Registration
}

// Load reads and checks the registration files at paths: each must parse,
// and no two may share an id, as_token or hs_token.
func Load(paths []string, server matrix.ServerName) (*Set, error) {
	regs := make([]*Registration, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r, err := Parse(data, server)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r.Source = p
		regs = append(regs, r)
	}
	return NewSet(regs)
}

// NewSet checks registrations for clashes and indexes them.
func NewSet(regs []*Registration) (*Set, error) {
	s := &Set{byAS: map[string]*Registration{}, byID: map[string]*Registration{}}
	hs := map[string]*Registration{}
	senders := map[string]*Registration{}
	for _, r := range regs {
		name := r.Source
		if name == "" {
			name = r.ID
		}
		if o := s.byID[r.ID]; o != nil {
			return nil, fmt.Errorf("application service %s: id %q is also used by %s", name, r.ID, o.Source)
		}
		if o := s.byAS[r.ASToken]; o != nil {
			return nil, fmt.Errorf("application service %s: as_token is also used by %s", name, o.Source)
		}
		if o := hs[r.HSToken]; o != nil {
			return nil, fmt.Errorf("application service %s: hs_token is also used by %s", name, o.Source)
		}
		if o := s.byAS[r.HSToken]; o != nil {
			return nil, fmt.Errorf("application service %s: hs_token is the as_token of %s", name, o.Source)
		}
		if o := hs[r.ASToken]; o != nil {
			return nil, fmt.Errorf("application service %s: as_token is the hs_token of %s", name, o.Source)
		}
		if o := senders[r.Sender]; o != nil {
			return nil, fmt.Errorf("application service %s: sender_localpart is also used by %s", name, o.Source)
		}
		s.byID[r.ID], s.byAS[r.ASToken], hs[r.HSToken], senders[r.Sender] = r, r, r, r
		s.list = append(s.list, r)
	}
	return s, nil
}

// All returns every registration, in the order given.
func (s *Set) All() []*Registration {
	if s == nil {
		return nil
	}
	return s.list
}

// ByASToken returns the service whose as_token is tok, or nil.
func (s *Set) ByASToken(tok string) *Registration {
	if s == nil {
		return nil
	}
	return s.byAS[tok]
}

// ByID returns the service with the given id, or nil.
func (s *Set) ByID(id string) *Registration {
	if s == nil {
		return nil
	}
	return s.byID[id]
}

// ExclusiveUser returns the service that owns userID exclusively (its
// sender, or an exclusive users namespace), or nil.
func (s *Set) ExclusiveUser(userID string) *Registration {
	for _, r := range s.All() {
		if r.Sender == userID || matches(r.Namespaces.Users, userID, true) {
			return r
		}
	}
	return nil
}

// ExclusiveAlias returns the service that owns alias exclusively, or nil.
func (s *Set) ExclusiveAlias(alias string) *Registration {
	for _, r := range s.All() {
		if matches(r.Namespaces.Aliases, alias, true) {
			return r
		}
	}
	return nil
}

// ProtocolOwners returns the services that provide protocol.
func (s *Set) ProtocolOwners(protocol string) []*Registration {
	var out []*Registration
	for _, r := range s.All() {
		for _, p := range r.Protocols {
			if p == protocol {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// Protocols returns every protocol some service provides, once each.
func (s *Set) Protocols() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range s.All() {
		for _, p := range r.Protocols {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// OwnsUser reports whether userID is the service's sender or in one of
// its users namespaces (exclusive or not): who it may masquerade as and
// register.
func (r *Registration) OwnsUser(userID string) bool {
	return r.Sender == userID || matches(r.Namespaces.Users, userID, false)
}

// InterestedInUser reports whether events naming userID concern the
// service. Only local users count (the spec's note on user namespaces).
func (r *Registration) InterestedInUser(userID string, server matrix.ServerName) bool {
	if !strings.HasSuffix(userID, ":"+string(server)) {
		return false
	}
	return r.OwnsUser(userID)
}

// OwnsAlias reports whether alias is in one of the service's aliases
// namespaces.
func (r *Registration) OwnsAlias(alias string) bool {
	return matches(r.Namespaces.Aliases, alias, false)
}

// InterestedInRoomID reports whether roomID is in a rooms namespace.
func (r *Registration) InterestedInRoomID(roomID string) bool {
	return matches(r.Namespaces.Rooms, roomID, false)
}

func matches(list []Namespace, id string, exclusiveOnly bool) bool {
	for _, n := range list {
		if exclusiveOnly && !n.Exclusive {
			continue
		}
		if n.re != nil && n.re.MatchString(id) {
			return true
		}
	}
	return false
}
