package scim

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/storage"
)

var userNameFilter = regexp.MustCompile(`^\s*userName\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$`)

func (h *Handler) listUsers(r *http.Request, d *core.Directory) (int, any, error) {
	q := r.URL.Query()
	name := ""
	if f := q.Get("filter"); f != "" {
		m := userNameFilter.FindStringSubmatch(f)
		if m == nil {
			return 0, nil, bad("invalidFilter", `only filter=userName eq "..." is supported`)
		}
		name = strings.ReplaceAll(strings.ReplaceAll(m[1], `\"`, `"`), `\\`, `\`)
	}
	start, count := 1, 100
	for key, dst := range map[string]*int{"startIndex": &start, "count": &count} {
		if v := q.Get(key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, nil, bad("invalidValue", "%s must be an integer", key)
			}
			*dst = n
		}
	}
	start, count = max(start, 1), min(max(count, 0), maxResults)
	users, total, err := h.core.Users(r.Context(), d, name, start, count)
	if err != nil {
		return 0, nil, err
	}
	res := make([]map[string]any, len(users))
	for i, u := range users {
		res[i] = h.toJSON(r, u)
	}
	return http.StatusOK, map[string]any{"schemas": []string{listSchema}, "totalResults": total, "startIndex": start,
		"itemsPerPage": len(res), "Resources": res}, nil
}

func (h *Handler) getUser(r *http.Request, d *core.Directory) (int, any, error) {
	u, err := h.core.User(r.Context(), d, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, h.toJSON(r, u), nil
}

func (h *Handler) createUser(r *http.Request, d *core.Directory) (int, any, error) {
	m, err := readJSON(r)
	if err != nil {
		return 0, nil, err
	}
	u := storage.DirectoryUser{Active: true}
	if err := apply(&u, m); err != nil {
		return 0, nil, err
	}
	u, err = h.core.PutUser(r.Context(), d, u, true)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, h.toJSON(r, u), nil
}

func (h *Handler) replaceUser(r *http.Request, d *core.Directory) (int, any, error) {
	m, err := readJSON(r)
	if err != nil {
		return 0, nil, err
	}
	cur, err := h.core.User(r.Context(), d, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	u := storage.DirectoryUser{ID: cur.ID, CreatedAt: cur.CreatedAt, Active: true}
	if err := apply(&u, m); err != nil {
		return 0, nil, err
	}
	u, err = h.core.PutUser(r.Context(), d, u, false)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, h.toJSON(r, u), nil
}

func (h *Handler) patchUser(r *http.Request, d *core.Directory) (int, any, error) {
	m, err := readJSON(r)
	if err != nil {
		return 0, nil, err
	}
	if sc, present := m["schemas"]; present {
		// RFC 7644 §3.5.2: a PatchOp names its schema; accept its absence
		// (some IdPs omit it) but not another message.
		list, _ := sc.([]any)
		if !slices.Contains(list, any(patchSchema)) {
			return 0, nil, bad("invalidSyntax", "schemas must be ["+patchSchema+"]")
		}
	}
	ops, ok := m["Operations"].([]any)
	if !ok || len(ops) == 0 || len(ops) > 100 {
		return 0, nil, bad("invalidSyntax", "a PatchOp needs 1 to 100 Operations")
	}
	u, err := h.core.User(r.Context(), d, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	for _, o := range ops {
		if err := patch(&u, o); err != nil {
			return 0, nil, err
		}
	}
	u, err = h.core.PutUser(r.Context(), d, u, false)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, h.toJSON(r, u), nil
}

func (h *Handler) deleteUser(r *http.Request, d *core.Directory) (int, any, error) {
	return http.StatusNoContent, nil, h.core.DeleteUser(r.Context(), d, mux.Vars(r)["id"])
}

// apply sets u from a full SCIM User representation.
func apply(u *storage.DirectoryUser, m map[string]any) error {
	for _, attr := range []string{"userName", "externalId", "displayName", "active", "emails", "roles"} {
		v, ok := m[attr]
		if !ok {
			continue
		}
		if err := set(u, attr, v); err != nil {
			return err
		}
	}
	if u.UserName == "" {
		return bad("invalidValue", "userName is required")
	}
	return nil
}

// set assigns one attribute; path filters such as emails[type eq
// "work"].value (Entra ID) address the primary value.
func set(u *storage.DirectoryUser, path string, v any) error {
	attr, _, _ := strings.Cut(path, "[")
	attr, _, _ = strings.Cut(attr, ".")
	switch strings.ToLower(attr) {
	case "username":
		return str(&u.UserName, v, 256)
	case "externalid":
		return str(&u.ExternalID, v, 256)
	case "displayname":
		return str(&u.DisplayName, v, 256)
	case "active":
		switch b := v.(type) {
		case bool:
			u.Active = b
		case string: // Entra ID sends "True" and "False"
			switch strings.ToLower(b) {
			case "true":
				u.Active = true
			case "false":
				u.Active = false
			default:
				return bad("invalidValue", "active must be a boolean")
			}
		default:
			return bad("invalidValue", "active must be a boolean")
		}
	case "emails":
		vals, err := values(v, path)
		if err != nil {
			return err
		}
		u.Emails = vals
	case "roles":
		vals, err := values(v, path)
		if err != nil {
			return err
		}
		u.Role = ""
		if len(vals) > 0 {
			u.Role = vals[0]
		}
	case "name", "locale", "title", "preferredlanguage", "timezone", "nickname", "usertype", "phonenumbers", "addresses", "schemas", "id", "meta", "password":
		// accepted and not kept: actas needs none of them
	default:
		if !strings.HasPrefix(attr, "urn:") {
			return bad("invalidPath", "attribute %q is not supported", attr)
		}
	}
	return nil
}

func str(dst *string, v any, max int) error {
	s, ok := v.(string)
	if !ok || len(s) > max {
		return bad("invalidValue", "a string of at most %d bytes is expected", max)
	}
	*dst = s
	return nil
}

// values reads a multi-valued attribute ([{value, primary}] or, for a
// value path, a plain string), primary first.
func values(v any, path string) ([]string, error) {
	if s, ok := v.(string); ok && strings.Contains(path, ".") {
		return []string{s}, nil
	}
	list, ok := v.([]any)
	if !ok {
		if one, isMap := v.(map[string]any); isMap {
			list = []any{one}
		} else {
			return nil, bad("invalidValue", "%s must be a list of {value, primary}", path)
		}
	}
	var out []string
	for _, it := range list {
		m, ok := it.(map[string]any)
		val, _ := m["value"].(string)
		if !ok || val == "" || len(val) > 256 {
			return nil, bad("invalidValue", "%s entries need a string value", path)
		}
		if p, _ := m["primary"].(bool); p || m["primary"] == "True" || m["primary"] == "true" {
			out = append([]string{val}, out...)
		} else {
			out = append(out, val)
		}
	}
	if len(out) > 20 {
		return nil, bad("invalidValue", "at most 20 values")
	}
	return out, nil
}

// patch applies one RFC 7644 §3.5.2 operation: add or replace (with a path,
// or a value object as Okta sends), remove.
func patch(u *storage.DirectoryUser, o any) error {
	m, ok := o.(map[string]any)
	if !ok {
		return bad("invalidSyntax", "each operation is an object")
	}
	op, _ := m["op"].(string)
	path, _ := m["path"].(string)
	switch strings.ToLower(op) {
	case "add", "replace":
		if path != "" {
			return set(u, path, m["value"])
		}
		obj, ok := m["value"].(map[string]any)
		if !ok {
			return bad("invalidValue", "an operation without path needs an object value")
		}
		for k, v := range obj {
			if err := set(u, k, v); err != nil {
				return err
			}
		}
	case "remove":
		switch strings.ToLower(strings.SplitN(path, "[", 2)[0]) {
		case "roles":
			u.Role = ""
		case "emails":
			u.Emails = nil
		case "displayname":
			u.DisplayName = ""
		case "externalid":
			u.ExternalID = ""
		default:
			return bad("noTarget", "cannot remove %q", path)
		}
	default:
		return bad("invalidSyntax", "op must be add, replace or remove")
	}
	return nil
}
