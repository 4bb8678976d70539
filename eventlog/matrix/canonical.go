package matrix

import (
	"bytes"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxSafeInteger is the largest integer canonical JSON allows, 2^53-1: the
// largest integer an IEEE double holds exactly (appendices: "Canonical JSON").
// The smallest is -MaxSafeInteger.
const MaxSafeInteger = 1<<53 - 1

// maxJSONDepth bounds how deeply arrays and objects may nest: the bound of
// all client JSON (limits.go). Events are at most 64 KiB, so real content
// never comes close.
const maxJSONDepth = MaxJSONDepth

// CanonicalJSON re-encodes raw (any JSON value) as Matrix canonical JSON:
// object keys sorted by code point, no insignificant whitespace, strings as
// raw UTF-8 with only the escapes JSON requires, and numbers as integers in
// [-MaxSafeInteger, MaxSafeInteger].
//
// A number written with a fraction or exponent is accepted when its value
// is an exact integer in range, so 1e10 becomes 10000000000 and -0 becomes
// 0, as in the spec's own examples; 1.5 and 2^53 are rejected. Duplicate
// object keys, invalid UTF-8 and lone UTF-16 surrogates are rejected too,
// because they have no canonical form.
//
// It is a single streaming pass over the input without reflection or an
// intermediate tree: values are written as they are read, and only an
// object whose keys arrive out of order has its members rearranged.
//
// Errors are *Error values: M_NOT_JSON for syntax errors, M_BAD_JSON for
// JSON that is well formed but has no canonical form.
func CanonicalJSON(raw []byte) ([]byte, error) {
	var c canonicalizer
	var membersBuf [32]objMember
	var keysBuf [512]byte
	c.in = raw
	c.members = membersBuf[:0]
	c.keys = keysBuf[:0]
	c.out = make([]byte, 0, len(raw))
	c.skipSpace()
	if err := c.value(0); err != nil {
		return nil, err
	}
	c.skipSpace()
	if c.pos != len(c.in) {
		return nil, NotJSON("canonical JSON: unexpected data after the value at offset %d", c.pos)
	}
	return c.out, nil
}

// canonicalizer holds the state of one CanonicalJSON call. members and keys
// are stacks shared by all nesting levels, so a document costs a handful of
// allocations however many objects it holds.
type canonicalizer struct {
	in      []byte
	pos     int
	out     []byte
	members []objMember // members of the objects being parsed, innermost last
	keys    []byte      // decoded keys of those members
	scratch []byte      // reused when an object's members must be reordered
}

// objMember is one member of an object being canonicalised: its decoded key
// in c.keys and the span of its encoded `"key":value` in c.out.
type objMember struct {
	keyStart, keyEnd int
	start, end       int
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) syntax(what string) error {
	if c.pos >= len(c.in) {
		return NotJSON("canonical JSON: unexpected end of input, expected %s", what)
	}
	return NotJSON("canonical JSON: unexpected %q at offset %d, expected %s", c.in[c.pos], c.pos, what)
}

func (c *canonicalizer) value(depth int) error {
	if c.pos >= len(c.in) {
		return c.syntax("a value")
	}
	switch b := c.in[c.pos]; {
	case b == '{':
		return c.object(depth + 1)
	case b == '[':
		return c.array(depth + 1)
	case b == '"':
		return c.str(false)
	case b == '-' || b >= '0' && b <= '9':
		return c.number()
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	}
	return c.syntax("a value")
}

func (c *canonicalizer) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return c.syntax(lit)
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

func (c *canonicalizer) array(depth int) error {
	if depth > maxJSONDepth {
		return BadJSON("canonical JSON: nested deeper than %d", maxJSONDepth)
	}
	c.pos++ // '['
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return nil
	}
	for {
		c.skipSpace()
		if err := c.value(depth); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.syntax("',' or ']'")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return nil
		default:
			return c.syntax("',' or ']'")
		}
	}
}

func (c *canonicalizer) object(depth int) error {
	if depth > maxJSONDepth {
		return BadJSON("canonical JSON: nested deeper than %d", maxJSONDepth)
	}
	c.pos++ // '{'
	objStart := len(c.out)
	c.out = append(c.out, '{')
	base, keyBase := len(c.members), len(c.keys)
	defer func() { c.members, c.keys = c.members[:base], c.keys[:keyBase] }()
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return nil
	}
	sorted := true
	for {
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.syntax("an object key")
		}
		m := objMember{start: len(c.out), keyStart: len(c.keys)}
		if err := c.str(true); err != nil {
			return err
		}
		m.keyEnd = len(c.keys)
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.syntax("':'")
		}
		c.pos++
		c.out = append(c.out, ':')
		c.skipSpace()
		if err := c.value(depth); err != nil {
			return err
		}
		m.end = len(c.out)
		if n := len(c.members); n > base {
			switch bytes.Compare(c.keys[c.members[n-1].keyStart:c.members[n-1].keyEnd], c.keys[m.keyStart:m.keyEnd]) {
			case 0:
				return BadJSON("canonical JSON: duplicate object key %q", c.keys[m.keyStart:m.keyEnd])
			case 1:
				sorted = false
			}
		}
		c.members = append(c.members, m)
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.syntax("',' or '}'")
		}
		if c.in[c.pos] == '}' {
			c.pos++
			break
		}
		if c.in[c.pos] != ',' {
			return c.syntax("',' or '}'")
		}
		c.pos++
		c.out = append(c.out, ',')
	}
	if !sorted {
		if err := c.reorder(objStart, base); err != nil {
			return err
		}
	}
	c.out = append(c.out, '}')
	return nil
}

// reorder rewrites the members of the object starting at c.out[objStart]
// (its '{') in key order. Keys compare as decoded UTF-8 bytes, which orders
// them by code point as the spec requires.
func (c *canonicalizer) reorder(objStart, base int) error {
	ms := c.members[base:]
	keys := c.keys
	slices.SortFunc(ms, func(a, b objMember) int {
		return bytes.Compare(keys[a.keyStart:a.keyEnd], keys[b.keyStart:b.keyEnd])
	})
	for i := 1; i < len(ms); i++ {
		if bytes.Equal(keys[ms[i-1].keyStart:ms[i-1].keyEnd], keys[ms[i].keyStart:ms[i].keyEnd]) {
			return BadJSON("canonical JSON: duplicate object key %q", keys[ms[i].keyStart:ms[i].keyEnd])
		}
	}
	body := objStart + 1
	c.scratch = append(c.scratch[:0], c.out[body:]...)
	c.out = c.out[:body]
	for i, m := range ms {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.scratch[m.start-body:m.end-body]...)
	}
	return nil
}

// str reads a JSON string and writes its canonical encoding. For an object
// key it also appends the decoded bytes to c.keys for sorting.
func (c *canonicalizer) str(isKey bool) error {
	start := c.pos
	c.pos++ // opening quote
	c.out = append(c.out, '"')
	for {
		// Copy the longest run of bytes that need no attention.
		run := c.pos
		for run < len(c.in) {
			b := c.in[run]
			if b < 0x20 || b == '"' || b == '\\' || b >= 0x80 {
				break
			}
			run++
		}
		if run > c.pos {
			c.out = append(c.out, c.in[c.pos:run]...)
			if isKey {
				c.keys = append(c.keys, c.in[c.pos:run]...)
			}
			c.pos = run
		}
		if c.pos >= len(c.in) {
			c.pos = start
			return NotJSON("canonical JSON: unterminated string at offset %d", start)
		}
		b := c.in[c.pos]
		switch {
		case b == '"':
			c.pos++
			c.out = append(c.out, '"')
			return nil
		case b < 0x20:
			return NotJSON("canonical JSON: unescaped control character in string at offset %d", c.pos)
		case b >= 0x80:
			r, size := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && size <= 1 {
				return BadJSON("canonical JSON: invalid UTF-8 at offset %d", c.pos)
			}
			c.out = append(c.out, c.in[c.pos:c.pos+size]...)
			if isKey {
				c.keys = append(c.keys, c.in[c.pos:c.pos+size]...)
			}
			c.pos += size
		default: // backslash
			r, err := c.escape()
			if err != nil {
				return err
			}
			c.out = appendRune(c.out, r)
			if isKey {
				c.keys = utf8.AppendRune(c.keys, r)
			}
		}
	}
}

// escape decodes the escape sequence at c.pos (a backslash), joining UTF-16
// surrogate pairs.
func (c *canonicalizer) escape() (rune, error) {
	at := c.pos
	if c.pos+1 >= len(c.in) {
		return 0, NotJSON("canonical JSON: unterminated escape at offset %d", at)
	}
	e := c.in[c.pos+1]
	c.pos += 2
	switch e {
	case '"', '\\', '/':
		return rune(e), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := hex4(c.in, c.pos)
		if !ok {
			return 0, NotJSON("canonical JSON: bad \\u escape at offset %d", at)
		}
		c.pos += 4
		if !utf16.IsSurrogate(r) {
			return r, nil
		}
		if r < 0xdc00 && c.pos+1 < len(c.in) && c.in[c.pos] == '\\' && c.in[c.pos+1] == 'u' {
			if r2, ok := hex4(c.in, c.pos+2); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
				c.pos += 6
				return utf16.DecodeRune(r, r2), nil
			}
		}
		return 0, BadJSON("canonical JSON: unpaired UTF-16 surrogate at offset %d", at)
	}
	return 0, NotJSON("canonical JSON: bad escape at offset %d", at)
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, h := range b[i : i+4] {
		r <<= 4
		switch {
		case h >= '0' && h <= '9':
			r |= rune(h - '0')
		case h >= 'a' && h <= 'f':
			r |= rune(h - 'a' + 10)
		case h >= 'A' && h <= 'F':
			r |= rune(h - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// appendRune appends r as it appears inside a canonical JSON string: the
// short escapes for the control characters that have them, \u00XX (lower
// case hex) for the other control characters, escaped '"' and '\', and raw
// UTF-8 for everything else.
func appendRune(dst []byte, r rune) []byte {
	switch r {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
	}
	return utf8.AppendRune(dst, r)
}

// appendString appends s as a canonical JSON string. It reports false if s
// is not valid UTF-8, which no canonical JSON string can hold.
func appendString(dst []byte, s string) ([]byte, bool) {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' && b < 0x80 {
			j := i + 1
			for j < len(s) && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' && s[j] < 0x80 {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return dst, false
		}
		dst = appendRune(dst, r)
		i += size
	}
	return append(dst, '"'), true
}

// number reads a JSON number and writes it as a canonical integer. The
// value is worked out exactly from the decimal digits and exponent, never
// through a float64, so no rounding can let a non-integer through.
func (c *canonicalizer) number() error {
	start := c.pos
	neg := false
	if c.in[c.pos] == '-' {
		neg = true
		c.pos++
	}
	intStart := c.pos
	for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
		c.pos++
	}
	intDigits := c.in[intStart:c.pos]
	if len(intDigits) == 0 || len(intDigits) > 1 && intDigits[0] == '0' {
		return NotJSON("canonical JSON: malformed number at offset %d", start)
	}
	var fracDigits []byte
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		c.pos++
		fs := c.pos
		for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
			c.pos++
		}
		fracDigits = c.in[fs:c.pos]
		if len(fracDigits) == 0 {
			return NotJSON("canonical JSON: malformed number at offset %d", start)
		}
	}
	exp := 0
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		c.pos++
		expNeg := false
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			expNeg = c.in[c.pos] == '-'
			c.pos++
		}
		es := c.pos
		for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
			if exp < 1<<20 { // saturate: anything this large is out of range anyway
				exp = exp*10 + int(c.in[c.pos]-'0')
			}
			c.pos++
		}
		if c.pos == es {
			return NotJSON("canonical JSON: malformed number at offset %d", start)
		}
		if expNeg {
			exp = -exp
		}
	}
	if len(fracDigits) == 0 && exp == 0 {
		// The common case: a plain integer.
		if len(intDigits) > 16 || len(intDigits) == 16 && string(intDigits) > "9007199254740991" {
			return BadJSON("canonical JSON: integer %s is out of range", c.in[start:c.pos])
		}
		if neg && !(len(intDigits) == 1 && intDigits[0] == '0') {
			c.out = append(c.out, '-')
		}
		c.out = append(c.out, intDigits...)
		return nil
	}
	// value = digits × 10^exp, with digits = intDigits ‖ fracDigits.
	var digitsBuf [40]byte
	digits := append(append(digitsBuf[:0], intDigits...), fracDigits...)
	exp -= len(fracDigits)
	for len(digits) > 0 && digits[0] == '0' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		c.out = append(c.out, '0') // any spelling of zero, including -0
		return nil
	}
	for exp < 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	if exp < 0 {
		return BadJSON("canonical JSON: %s is not an integer; floats are not allowed", c.in[start:c.pos])
	}
	if len(digits)+exp > 16 {
		return BadJSON("canonical JSON: integer %s is out of range", c.in[start:c.pos])
	}
	var v uint64
	for _, d := range digits {
		v = v*10 + uint64(d-'0')
	}
	for ; exp > 0; exp-- {
		v *= 10
	}
	if v > MaxSafeInteger {
		return BadJSON("canonical JSON: integer %s is out of range", c.in[start:c.pos])
	}
	if neg {
		c.out = append(c.out, '-')
	}
	c.out = appendUint(c.out, v)
	return nil
}

func appendUint(dst []byte, v uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendUint(append(dst, '-'), uint64(-v))
	}
	return appendUint(dst, uint64(v))
}
