package devidp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// SignInAs makes /authorize sign u in at once, as a real IdP would after
// its login page: the authorization code flow for public clients, PKCE
// S256 required, redirects to loopback addresses only (RFC 8252 §7.3).
func (d *IDP) SignInAs(u User) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.user = &u
}

func (d *IDP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d.mu.Lock()
	u := d.user
	d.mu.Unlock()
	ru, err := url.Parse(q.Get("redirect_uri"))
	switch {
	case u == nil:
		http.Error(w, "this dev issuer has no browser sign-in", http.StatusNotFound)
		return
	case err != nil || ru.Scheme != "http" || (ru.Hostname() != "127.0.0.1" && ru.Hostname() != "localhost" && ru.Hostname() != "::1"):
		http.Error(w, "redirect_uri must be a loopback http URL (RFC 8252 §7.3)", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code" || q.Get("client_id") == "" || !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		http.Error(w, "want response_type=code, client_id and scope openid", http.StatusBadRequest)
		return
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		http.Error(w, "PKCE with S256 is required", http.StatusBadRequest)
		return
	}
	code := randomString()
	d.mu.Lock()
	for c, g := range d.codes {
		if time.Now().After(g.expires) {
			delete(d.codes, c)
		}
	}
	d.codes[code] = grant{clientID: q.Get("client_id"), redirectURI: ru.String(), challenge: q.Get("code_challenge"),
		nonce: q.Get("nonce"), expires: time.Now().Add(time.Minute)}
	d.mu.Unlock()
	back := ru.Query()
	back.Set("code", code)
	back.Set("state", q.Get("state"))
	ru.RawQuery = back.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

func (d *IDP) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	fail := func(code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		fail("unsupported_grant_type", "only authorization_code")
		return
	}
	d.mu.Lock()
	g, ok := d.codes[r.PostForm.Get("code")]
	delete(d.codes, r.PostForm.Get("code"))
	u := d.user
	d.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case !ok || time.Now().After(g.expires) || u == nil:
		fail("invalid_grant", "unknown, used or expired code")
	case g.clientID != r.PostForm.Get("client_id") || g.redirectURI != r.PostForm.Get("redirect_uri"):
		fail("invalid_grant", "client_id or redirect_uri differ from the authorization request")
	case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1:
		fail("invalid_grant", "code_verifier does not match the code_challenge")
	default:
		extra := map[string]any{"auth_time": time.Now().Unix()}
		for k, v := range u.Claims {
			extra[k] = v
		}
		if g.nonce != "" {
			extra["nonce"] = g.nonce
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": randomString(), "token_type": "Bearer", "expires_in": 3600,
			"id_token": d.Mint(u.Sub, g.clientID, time.Hour, extra),
		})
	}
}

func randomString() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
