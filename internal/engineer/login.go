package engineer

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/actas/actas/rp/dpop"
)

// LoginOptions control sign-in.
type LoginOptions struct {
	NoBrowser bool          // print the URL alone on stderr instead of opening a browser
	Timeout   time.Duration // how long to wait for the browser to come back
}

// Login signs the engineer in at the support IdP the broker names, with
// the authorization code flow, PKCE (S256) and a nonce, on a loopback
// redirect (RFC 8252 §7.3), and keeps the ID token for redemptions. The
// cache keeps its DPoP key and grants across sign-ins.
func (cl *Client) Login(ctx context.Context, o LoginOptions) (*Login, error) {
	path := Path(cl.Dir, cl.Broker)
	unlock, err := lockCache(path)
	if err != nil {
		return nil, errorf(ExitError, "locking %s: %v", path, err)
	}
	defer unlock()
	d, err := cl.discover(ctx)
	if err != nil {
		return nil, err
	}
	c, err := load(cl.Dir, cl.Broker)
	if errors.Is(err, errNotSignedIn) {
		c, err = newCache(path, cl.Broker)
	}
	if err != nil {
		return nil, err
	}
	if c.Support != d.SupportIDP {
		c.Grants = nil // another IdP: earlier grants were another identity's
	}
	c.Support, c.CLIClient = d.SupportIDP, d.CLIClientID
	login, err := cl.signIn(ctx, c.Support, o)
	if err != nil {
		return nil, err
	}
	c.Login = login
	return login, c.save()
}

func newCache(path, broker string) (*Cache, error) {
	k, err := dpop.NewKey()
	if err != nil {
		return nil, err
	}
	raw, err := k.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return &Cache{Broker: broker, DPoPKey: raw, key: k, path: path}, nil
}

func (cl *Client) provider(ctx context.Context, idp SupportIdP) (*oidc.Provider, context.Context, error) {
	ctx = oidc.ClientContext(ctx, cl.HTTP)
	p, err := oidc.NewProvider(ctx, idp.Issuer)
	if err != nil {
		return nil, nil, unreachable("the support identity provider", idp.Issuer, err)
	}
	return p, ctx, nil
}

func (cl *Client) signIn(ctx context.Context, idp SupportIdP, o LoginOptions) (*Login, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	p, octx, err := cl.provider(ctx, idp)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errorf(ExitError, "cannot listen on a loopback port for the sign-in redirect: %v", err)
	}
	conf := oauth2.Config{
		ClientID: idp.ClientID, Endpoint: p.Endpoint(), Scopes: scopes(p),
		RedirectURL: fmt.Sprintf("http://%s/callback", ln.Addr()),
	}
	conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams // a public client: client_id in the form, no secret
	state, nonce, verifier := random(), random(), oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))

	codes := make(chan callback, 1)
	srv := &http.Server{Handler: callbackHandler(state, codes), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	if o.NoBrowser || cl.OpenBrowser == nil {
		fmt.Fprintln(cl.Stderr, authURL)
	} else {
		fmt.Fprintf(cl.Stderr, "Opening a browser to sign in at %s. If it does not open, visit:\n%s\n", idp.Issuer, authURL)
		if err := cl.OpenBrowser(authURL); err != nil {
			fmt.Fprintf(cl.Stderr, "(could not open a browser: %v)\n", err)
		}
	}
	var cb callback
	select {
	case cb = <-codes:
	case <-time.After(o.Timeout):
		return nil, errorf(ExitLogin, "no sign-in within %s: run 'actas support login' again", o.Timeout)
	case <-ctx.Done():
		return nil, errorf(ExitLogin, "sign-in cancelled")
	}
	if cb.err != "" {
		return nil, errorf(ExitLogin, "the support identity provider refused the sign-in: %s", cb.err)
	}
	tok, err := conf.Exchange(octx, cb.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, errorf(ExitLogin, "the support identity provider refused the code: %v", oauthReason(err))
	}
	return cl.verifyLogin(octx, p, idp, tok, nonce)
}

// verifyLogin checks the ID token of a token response: signature, issuer,
// audience, expiry and, on first sign-in, the nonce.
func (cl *Client) verifyLogin(ctx context.Context, p *oidc.Provider, idp SupportIdP, tok *oauth2.Token, nonce string) (*Login, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errorf(ExitLogin, "the support identity provider returned no ID token")
	}
	id, err := p.Verifier(&oidc.Config{ClientID: idp.ClientID, Now: cl.now}).Verify(ctx, raw)
	if err != nil {
		return nil, errorf(ExitLogin, "the ID token from the support identity provider does not verify: %v", err)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(id.Nonce), []byte(nonce)) != 1 {
		return nil, errorf(ExitLogin, "the ID token does not carry this sign-in's nonce")
	}
	var c struct {
		Email string `json:"email"`
	}
	id.Claims(&c)
	return &Login{IDToken: raw, RefreshToken: tok.RefreshToken, Expiry: id.Expiry.UTC(), Subject: id.Subject, Email: c.Email}, nil
}

// freshLogin makes sure c holds an ID token valid for another minute,
// renewing it with the IdP's refresh token when it can.
func (cl *Client) freshLogin(ctx context.Context, c *Cache) (bool, error) {
	if c.Login == nil {
		return false, errNotSignedIn
	}
	if cl.now().Add(time.Minute).Before(c.Login.Expiry) {
		return false, nil
	}
	expired := errorf(ExitLogin, "your sign-in at %s has expired: run 'actas support login'", c.Support.Issuer)
	if c.Login.RefreshToken == "" {
		return false, expired
	}
	p, octx, err := cl.provider(ctx, c.Support)
	if err != nil {
		return false, err
	}
	conf := oauth2.Config{ClientID: c.Support.ClientID, Endpoint: p.Endpoint()}
	conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	tok, err := conf.TokenSource(octx, &oauth2.Token{RefreshToken: c.Login.RefreshToken, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return false, expired
	}
	l, err := cl.verifyLogin(octx, p, c.Support, tok, "")
	if err != nil || l.Subject != c.Login.Subject {
		return false, expired
	}
	if l.RefreshToken == "" {
		l.RefreshToken = c.Login.RefreshToken
	}
	c.Login = l
	return true, nil
}

// scopes asks for openid and, of email, profile, groups and offline_access
// (to renew the sign-in), those the IdP lists as supported: some IdPs
// refuse an authorization request naming a scope they do not know.
func scopes(p *oidc.Provider) []string {
	var meta struct {
		Scopes []string `json:"scopes_supported"`
	}
	p.Claims(&meta)
	out := []string{oidc.ScopeOpenID}
	for _, s := range []string{"email", "profile", "groups", oidc.ScopeOfflineAccess} {
		if slices.Contains(meta.Scopes, s) {
			out = append(out, s)
		}
	}
	return out
}

type callback struct{ code, err string }

var donePage = template.Must(template.New("done").Parse(`<!doctype html>
<html lang="en"><meta charset="utf-8"><title>actas sign-in</title>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;line-height:1.5">
<h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

// callbackHandler receives the one redirect from the IdP: the state must
// match (CSRF, RFC 6749 §10.12); anything else at /callback is refused.
func callbackHandler(state string, out chan<- callback) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
			w.WriteHeader(http.StatusBadRequest)
			donePage.Execute(w, map[string]string{"Title": "Sign-in not accepted", "Text": "This response does not belong to the sign-in the actas CLI started. Return to your terminal."})
			return
		}
		cb := callback{code: q.Get("code")}
		if e := q.Get("error"); e != "" || cb.code == "" {
			cb = callback{err: e + " " + q.Get("error_description")}
			donePage.Execute(w, map[string]string{"Title": "Sign-in failed", "Text": "The identity provider refused the sign-in. Return to your terminal for details."})
		} else {
			donePage.Execute(w, map[string]string{"Title": "Signed in to actas", "Text": "You can close this tab and return to your terminal."})
		}
		select {
		case out <- cb:
		default: // a second redirect: the first one counts
		}
	})
	return mux
}

func random() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// oauthReason extracts the IdP's error text from an x/oauth2 failure.
func oauthReason(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorDescription != "" {
			return re.ErrorCode + ": " + re.ErrorDescription
		}
		if re.ErrorCode != "" {
			return re.ErrorCode
		}
		return re.Response.Status
	}
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		return "cannot reach it: " + err.Error()
	}
	return err.Error()
}
