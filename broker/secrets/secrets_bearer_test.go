package secrets

import (
	"strings"
	"testing"
	"time"
)

func TestBearer(t *testing.T) {
	k, _ := Derive(make([]byte, 32))
	now := time.Unix(1_800_000_000, 0)
	tok := k.SealBearer("product", "ssf", now.Add(time.Hour))
	if id, ok := k.OpenBearer(tok, "ssf", now); !ok || id != "product" {
		t.Fatalf("open: %q %v", id, ok)
	}
	for name, c := range map[string]struct {
		tok, scope string
		at         time.Time
	}{
		"expired":     {tok, "ssf", now.Add(time.Hour)},
		"other scope": {tok, "other", now},
		"tampered":    {strings.Replace(tok, "cHJvZHVjdA", "b3RoZXI", 1), "ssf", now},
		"no prefix":   {strings.TrimPrefix(tok, BearerPrefix), "ssf", now},
		"other secret": {func() string {
			k2, _ := Derive([]byte(strings.Repeat("x", 32)))
			return k2.SealBearer("product", "ssf", now.Add(time.Hour))
		}(), "ssf", now},
	} {
		if _, ok := k.OpenBearer(c.tok, c.scope, c.at); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
