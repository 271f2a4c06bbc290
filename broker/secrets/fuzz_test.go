package secrets

import "testing"

// FuzzOpenCursor: a cursor opens only if it is exactly what SealCursor
// made for that scope, and yields the position sealed in it.
func FuzzOpenCursor(f *testing.F) {
	k, err := Derive([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("acme\x00audit", k.SealCursor("acme\x00audit", []byte{0, 0, 0, 0, 0, 0, 0, 42}))
	f.Add("other\x00audit", k.SealCursor("acme\x00audit", []byte{0, 0, 0, 0, 0, 0, 0, 42}))
	f.Add("acme\x00grants", "AAAAAAAAACoAAAAAAAAAAAAAAAAAAAAA")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, scope, c string) {
		pos, ok := k.OpenCursor(scope, c)
		if ok && k.SealCursor(scope, pos) != c {
			t.Fatalf("opened a cursor SealCursor did not make: %q", c)
		}
	})
}
