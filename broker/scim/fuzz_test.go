package scim

import (
	"encoding/json"
	"testing"

	"github.com/actas/actas/storage"
)

// FuzzUserBodies: no SCIM body an IdP (or anyone holding a token) sends
// makes apply or patch panic, and whatever they accept keeps the bounds.
func FuzzUserBodies(f *testing.F) {
	f.Add(`{"userName":"a","active":true,"emails":[{"value":"a@x","primary":true}],"roles":[{"value":"admin","primary":"True"}]}`)
	f.Add(`{"Operations":[{"op":"Replace","path":"roles[primary eq \"True\"].value","value":"monitor"}]}`)
	f.Add(`{"Operations":[{"op":"replace","value":{"active":"False"}}]}`)
	f.Add(`{"Operations":[{"op":"remove","path":"emails[type eq \"work\"]"}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var m map[string]any
		if json.Unmarshal([]byte(body), &m) != nil {
			return
		}
		u := storage.DirectoryUser{}
		if apply(&u, m) == nil && (u.UserName == "" || len(u.UserName) > 256 || len(u.Emails) > 20) {
			t.Fatalf("apply accepted %+v", u)
		}
		if ops, ok := m["Operations"].([]any); ok {
			for _, o := range ops {
				if patch(&u, o) != nil {
					break
				}
			}
			if len(u.Emails) > 20 || len(u.Role) > 256 {
				t.Fatalf("patch broke the bounds: %+v", u)
			}
		}
	})
}
