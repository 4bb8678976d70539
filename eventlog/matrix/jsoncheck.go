package matrix

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
)

// CheckStoredJSON refuses a JSON text that PostgreSQL's jsonb, or a later
// reader, could not hold, although JSON's grammar allows it:
//
//   - a \u escape of a lone UTF-16 surrogate (jsonb: "invalid input syntax
//     for type json"; it is no Unicode character, so no canonical form);
//   - a number whose literal is longer than MaxJSONNumberBytes, whose
//     exponent is beyond ±MaxJSONExponent (numeric: "value overflows
//     numeric format"), or whose value is beyond float64's range (every
//     client decodes numbers as doubles);
//   - arrays and objects nested deeper than MaxJSONDepth.
//
// A NUL character and invalid UTF-8 are refused by the request reader
// before (checkText). Room events have stricter rules on top
// (CanonicalJSON: integers within ±(2^53-1) only).
//
// raw should be valid JSON (the caller has parsed it); a syntax error met
// on the way is M_NOT_JSON, everything else M_BAD_JSON.
func CheckStoredJSON(raw []byte) error {
	depth := 0
	for i := 0; i < len(raw); {
		switch b := raw[i]; {
		case b == '{' || b == '[':
			depth++
			if depth > MaxJSONDepth {
				return BadJSON("JSON nested deeper than %d levels", MaxJSONDepth)
			}
			i++
		case b == '}' || b == ']':
			depth--
			i++
		case b == '"':
			j, err := checkJSONString(raw, i)
			if err != nil {
				return err
			}
			i = j
		case b == '-' || b >= '0' && b <= '9':
			j := i + 1
			for j < len(raw) && isNumberByte(raw[j]) {
				j++
			}
			if err := checkJSONNumber(raw[i:j]); err != nil {
				return err
			}
			i = j
		default: // whitespace, separators, true, false, null
			i++
		}
	}
	return nil
}

func isNumberByte(b byte) bool {
	return b >= '0' && b <= '9' || b == '.' || b == 'e' || b == 'E' || b == '+' || b == '-'
}

// checkJSONString checks the string starting at raw[i] (its opening quote)
// for unpaired surrogate escapes and returns the offset after it.
func checkJSONString(raw []byte, i int) (int, error) {
	start := i
	for i++; i < len(raw); i++ {
		switch raw[i] {
		case '"':
			return i + 1, nil
		case '\\':
			if i+1 >= len(raw) {
				return 0, NotJSON("unterminated escape at offset %d", i)
			}
			if raw[i+1] != 'u' {
				i++ // a one-character escape
				continue
			}
			r, ok := hex4(raw, i+2)
			if !ok {
				return 0, NotJSON("bad \\u escape at offset %d", i)
			}
			if utf16.IsSurrogate(r) {
				// Only a high surrogate directly followed by an escaped
				// low one is a character.
				if r >= 0xdc00 || i+11 >= len(raw) || raw[i+6] != '\\' || raw[i+7] != 'u' {
					return 0, BadJSON("unpaired UTF-16 surrogate \\u%04x at offset %d", r, i)
				}
				if r2, ok := hex4(raw, i+8); !ok || r2 < 0xdc00 || r2 > 0xdfff {
					return 0, BadJSON("unpaired UTF-16 surrogate \\u%04x at offset %d", r, i)
				}
				i += 6
			}
			i += 5 // the rest of the escape; the loop adds one
		}
	}
	return 0, NotJSON("unterminated string at offset %d", start)
}

// checkJSONNumber checks one number literal.
func checkJSONNumber(lit []byte) error {
	if len(lit) > MaxJSONNumberBytes {
		return BadJSON("number %.20s... is longer than %d characters", lit, MaxJSONNumberBytes)
	}
	for k, b := range lit {
		if b != 'e' && b != 'E' {
			continue
		}
		exp, err := strconv.Atoi(string(lit[k+1:]))
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return NotJSON("bad number %s", lit)
		}
		if err != nil || exp > MaxJSONExponent || exp < -MaxJSONExponent {
			return BadJSON("number %s has an exponent beyond ±%d", lit, MaxJSONExponent)
		}
		break
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return NotJSON("bad number %s", lit)
	}
	if math.IsInf(f, 0) {
		return BadJSON("number %s is beyond the range of a double", lit)
	}
	return nil
}
