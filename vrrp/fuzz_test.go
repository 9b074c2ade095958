package vrrp

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, rejects only with a *RejectError, and that what it
// accepts re-marshals to bytes that parse to an equal Advert.
func FuzzParse(f *testing.F) {
	for _, g := range goldens {
		f.Add(g.wire, g.src.Is6(), g.pseudo, uint8(g.adv.Auth))
	}
	f.Add([]byte{0x21, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false, false, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, v6, pseudo bool, auth uint8) {
		src, dst := src4, GroupV4
		if v6 {
			src, dst = src6, GroupV6
		}
		o := ParseOptions{TTL: 255, PseudoHeader: pseudo, Auth: AuthType(auth % 3), Password: "secret"}
		in := bytes.Clone(b)
		a, err := Parse(b, src, dst, o)
		if !bytes.Equal(in, b) {
			t.Fatal("Parse modified its input")
		}
		if err != nil {
			var re *RejectError
			if !errors.As(err, &re) || re.Reason < ReasonTruncated || re.Reason > ReasonFamily {
				t.Fatalf("error %v is not a *RejectError with a known reason", err)
			}
			return
		}
		out, err := a.Marshal(src, dst, pseudo)
		if err != nil {
			t.Fatalf("Marshal of accepted %+v: %v", a, err)
		}
		a2, err := Parse(out, src, dst, o)
		if err != nil {
			t.Fatalf("re-parse of % x (from % x): %v", out, b, err)
		}
		if !reflect.DeepEqual(a, a2) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", a2, a)
		}
		// Marshal writes the same header and addresses; only the checksum, reserved bits, v2
		// auth data (ignored with AuthNone) and trailing bytes may differ.
		addrs := len(out) - authLenIf(a)
		if !bytes.Equal(out[:4], b[:4]) || !bytes.Equal(out[8:addrs], b[8:addrs]) {
			t.Fatalf("re-marshalled header or addresses differ:\n got % x\nwant % x", out, b)
		}
	})
}

func authLenIf(a Advert) int {
	if a.Version == V2 {
		return authLen
	}
	return 0
}
