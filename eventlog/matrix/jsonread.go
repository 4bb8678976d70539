package matrix

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// This file reads JSON that is already canonical (the output of
// CanonicalJSON): no whitespace, integers only. Events are stored that way,
// so their fields can be picked out by walking the bytes instead of decoding
// into maps through reflection. Every function checks its bounds and reports
// malformed input as an error; none assumes more than it verifies.

var errMalformed = errors.New("malformed canonical JSON")

// skipValue returns the offset just past the JSON value that starts at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errMalformed
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '{', '[':
				depth++
				i++
			case '}', ']':
				depth--
				i++
				if depth == 0 {
					return i, nil
				}
			case '"':
				j, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j
			default:
				i++
			}
		}
		return 0, errMalformed
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' {
				break
			}
			j++
		}
		if j == i {
			return 0, errMalformed
		}
		return j, nil
	}
}

func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errMalformed
}

// eachMember calls fn with the encoded key (without quotes) and the raw
// value of every member of the object obj, in order, until fn returns
// false or an error.
func eachMember(obj []byte, fn func(key, val []byte) (bool, error)) error {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return errMalformed
	}
	i := 1
	if obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return errMalformed
		}
		ke, err := skipString(obj, i)
		if err != nil {
			return err
		}
		if ke >= len(obj) || obj[ke] != ':' {
			return errMalformed
		}
		ve, err := skipValue(obj, ke+1)
		if err != nil {
			return err
		}
		more, err := fn(obj[i+1:ke-1], obj[ke+1:ve])
		if err != nil || !more {
			return err
		}
		if ve >= len(obj) {
			return errMalformed
		}
		switch obj[ve] {
		case ',':
			i = ve + 1
		case '}':
			if ve != len(obj)-1 {
				return errMalformed
			}
			return nil
		default:
			return errMalformed
		}
	}
}

// eachElement calls fn with every element of the array arr.
func eachElement(arr []byte, fn func(val []byte) error) error {
	if len(arr) < 2 || arr[0] != '[' || arr[len(arr)-1] != ']' {
		return errMalformed
	}
	i := 1
	if arr[i] == ']' {
		return nil
	}
	for {
		e, err := skipValue(arr, i)
		if err != nil {
			return err
		}
		if err := fn(arr[i:e]); err != nil {
			return err
		}
		if e >= len(arr) {
			return errMalformed
		}
		switch arr[e] {
		case ',':
			i = e + 1
		case ']':
			if e != len(arr)-1 {
				return errMalformed
			}
			return nil
		default:
			return errMalformed
		}
	}
}

// lookup returns the raw value of key in the object obj, or nil.
func lookup(obj []byte, key string) []byte {
	var found []byte
	_ = eachMember(obj, func(k, v []byte) (bool, error) {
		if string(k) == key {
			found = v
			return false, nil
		}
		return true, nil
	})
	return found
}

// isObject, isArray and isString report the kind of a raw value.
func isObject(v []byte) bool { return len(v) >= 2 && v[0] == '{' }
func isArray(v []byte) bool  { return len(v) >= 2 && v[0] == '[' }
func isString(v []byte) bool { return len(v) >= 2 && v[0] == '"' }

// decodeString decodes the raw JSON string v.
func decodeString(v []byte) (string, bool) {
	if !isString(v) || v[len(v)-1] != '"' {
		return "", false
	}
	body := v[1 : len(v)-1]
	esc := false
	for _, c := range body {
		if c == '\\' {
			esc = true
			break
		}
	}
	if !esc {
		return string(body), true
	}
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(body) {
			return "", false
		}
		switch body[i+1] {
		case '"', '\\', '/':
			out = append(out, body[i+1])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(body, i+2)
			if !ok {
				return "", false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := hex4(body, i+2)
				if !ok || i+1 >= len(body) || body[i] != '\\' || body[i+1] != 'u' {
					return "", false
				}
				r = utf16.DecodeRune(r, r2)
				i += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return "", false
		}
		i += 2
	}
	return string(out), true
}

// decodeInt decodes a canonical JSON integer.
func decodeInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 17 {
		return 0, false
	}
	neg := v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > MaxSafeInteger {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// stringMember returns the string value of key in obj. ok is false when
// the key is missing or not a string.
func stringMember(obj []byte, key string) (s string, ok bool) {
	v := lookup(obj, key)
	if v == nil {
		return "", false
	}
	return decodeString(v)
}

// objectBuilder writes a canonical JSON object whose keys are added in
// sorted order. Callers add keys in order; the builder only adds commas.
type objectBuilder struct {
	buf []byte
	n   int
}

func (o *objectBuilder) begin(dst []byte) { o.buf = append(dst, '{'); o.n = 0 }

// raw adds a member whose key is plain ASCII needing no escapes.
func (o *objectBuilder) raw(key string, val []byte) {
	if o.n > 0 {
		o.buf = append(o.buf, ',')
	}
	o.n++
	o.buf = append(o.buf, '"')
	o.buf = append(o.buf, key...)
	o.buf = append(o.buf, '"', ':')
	o.buf = append(o.buf, val...)
}

// member adds an already-encoded key (without quotes) and value.
func (o *objectBuilder) member(key, val []byte) {
	if o.n > 0 {
		o.buf = append(o.buf, ',')
	}
	o.n++
	o.buf = append(o.buf, '"')
	o.buf = append(o.buf, key...)
	o.buf = append(o.buf, '"', ':')
	o.buf = append(o.buf, val...)
}

func (o *objectBuilder) end() []byte { return append(o.buf, '}') }
