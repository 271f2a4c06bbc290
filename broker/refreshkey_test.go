package broker

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/actas/actas/broker/oauth"
)

// Refresh tokens begin with the time they were issued, and are stored
// under that time and their MAC, so that tokens issued together share
// index pages. A token of the earlier form (no time) is stored under its
// bare MAC and must keep working across the upgrade.
func TestRefreshTokenKeys(t *testing.T) {
	e := newTestEnv(t)
	admin := e.admin(t)
	e.enable(t, admin)
	exchange := func() string {
		_, refresh := e.exchange(t, admin, e.engineer(t))
		return refresh
	}
	db := e.store.DBs()["write"]
	keys := func() [][]byte {
		rows, err := db.Query(`SELECT hash FROM refresh_tokens ORDER BY issued_at, rowid`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out [][]byte
		for rows.Next() {
			var k []byte
			rows.Scan(&k)
			out = append(out, k)
		}
		return out
	}
	refresh := func(tok string) (int, string) {
		w := e.post(t, "/token", url.Values{"grant_type": {oauth.GrantTypeRefreshToken}, "client_id": {"cli"}, "refresh_token": {tok}})
		return w.Code, w.Body.String()
	}

	first := exchange()
	time.Sleep(2 * time.Millisecond)
	second := exchange()
	if len(first) != len("actas_rt_")+8+43 || first[:17] > second[:17] {
		t.Fatalf("refresh tokens %q, %q: want the issue time first", first, second)
	}
	ks := keys()
	if len(ks) != 2 || len(ks[0]) != 6+32 || bytes.Compare(ks[0], ks[1]) >= 0 {
		t.Fatalf("stored keys %x: want 6 bytes of time then the MAC, in issue order", ks)
	}
	if !bytes.Equal(ks[0][6:], e.secrets.RefreshHash(first)) {
		t.Fatal("the stored key does not end in the token's MAC")
	}

	// A token issued before the upgrade: 43 random characters, stored
	// under its MAC alone.
	legacy := "actas_rt_" + strings.Repeat("Ab3-_", 8) + "xyz"
	if _, err := db.Exec(`UPDATE refresh_tokens SET hash = ? WHERE hash = ?`, e.secrets.RefreshHash(legacy), ks[1]); err != nil {
		t.Fatal(err)
	}
	if code, body := refresh(legacy); code != 200 {
		t.Fatalf("an earlier-form token: %d %s", code, body)
	}
	if code, body := refresh(first); code != 200 {
		t.Fatalf("a new-form token: %d %s", code, body)
	}
	// The time is covered by the MAC: another time with the same rest is
	// another token.
	forged := "actas_rt_" + "--------" + first[17:]
	if code, body := refresh(forged); code != 400 || !strings.Contains(body, "invalid_grant") {
		t.Fatalf("a token with its time changed: %d %s", code, body)
	}
}
