package ipallowlist

// decodeCanonical decodes raw into tp, as the strict decoder in
// decodeEntry would, when raw is in the narrow form the tokens CLI writes:
// one JSON object of the fields below, each at most once, spelt as
// written here, strings of printable ASCII without escapes, and nothing
// after it but whitespace. It reports false for anything else, which the
// strict decoder then reads (or refuses): the fast path only ever agrees
// with it. Strings are slices of raw, which the entry keeps anyway, so an
// entry costs one allocation for each list and none for its strings: at
// 1,000,000 entries a load decodes several times faster and the copy of
// the store is smaller.
func decodeCanonical(raw string, tp *TokenPolicy) bool {
	p := canonParser{s: raw}
	if !p.byte('{') {
		return false
	}
	var seen uint8
	if p.peek() != '}' {
		for {
			key, ok := p.str()
			if !ok || !p.byte(':') {
				return false
			}
			var bit uint8
			switch key {
			case "token":
				bit = 1
				tp.Token, ok = p.str()
			case "token_sha256":
				bit = 2
				tp.TokenSHA256, ok = p.str()
			case "allow":
				bit = 4
				tp.Allow, ok = p.list()
			case "deny":
				bit = 8
				tp.Deny, ok = p.list()
			case "revoked":
				bit = 16
				tp.Revoked, ok = p.boolean()
			case "allow_broad":
				bit = 32
				tp.AllowBroad, ok = p.boolean()
			default:
				return false
			}
			if !ok || seen&bit != 0 {
				return false
			}
			seen |= bit
			if p.peek() == '}' {
				break
			}
			if !p.byte(',') {
				return false
			}
		}
	}
	if !p.byte('}') {
		return false
	}
	p.space()
	return p.i == len(p.s)
}

type canonParser struct {
	s string
	i int
}

func (p *canonParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek is the next byte after whitespace; 0 at the end.
func (p *canonParser) peek() byte {
	p.space()
	if p.i == len(p.s) {
		return 0
	}
	return p.s[p.i]
}

func (p *canonParser) byte(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// str reads a string of printable ASCII with no escape.
func (p *canonParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	for j := p.i; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '"':
			v := p.s[p.i:j]
			p.i = j + 1
			return v, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", false
		}
	}
	return "", false
}

// list reads an array of strings; [] is an empty list, as the strict
// decoder makes it.
func (p *canonParser) list() ([]string, bool) {
	if !p.byte('[') {
		return nil, false
	}
	if p.byte(']') {
		return []string{}, true
	}
	// Count first, so the list is one allocation of its size.
	n := 1
	for j := p.i; j < len(p.s) && p.s[j] != ']'; j++ {
		if p.s[j] == ',' {
			n++
		}
	}
	out := make([]string, 0, n)
	for {
		v, ok := p.str()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		if p.byte(']') {
			return out, true
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}

func (p *canonParser) boolean() (bool, bool) {
	p.space()
	switch {
	case len(p.s)-p.i >= 4 && p.s[p.i:p.i+4] == "true":
		p.i += 4
		return true, true
	case len(p.s)-p.i >= 5 && p.s[p.i:p.i+5] == "false":
		p.i += 5
		return false, true
	}
	return false, false
}
