package secrets

import "testing"

// FuzzOpenCursor: a cursor opens only if it is exactly what SealCursor
// made for that tenant.
func FuzzOpenCursor(f *testing.F) {
	k, err := Derive([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("acme", k.SealCursor("acme", 42))
	f.Add("other", k.SealCursor("acme", 42))
	f.Add("acme", "AAAAAAAAACoAAAAAAAAAAAAAAAAAAAAA")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, tenant, c string) {
		id, ok := k.OpenCursor(tenant, c)
		if ok && (id <= 0 || k.SealCursor(tenant, id) != c) {
			t.Fatalf("opened a cursor SealCursor did not make: %q -> %d", c, id)
		}
	})
}
