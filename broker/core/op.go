package core

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Limits of the OpenID Provider flow.
const (
	// SessionIdle ends a browser session nobody used for this long.
	SessionIdle = 30 * time.Minute
	// SessionMaxAge ends a browser session this long after sign-in,
	// whatever its use: an engineer signs in again each working day.
	SessionMaxAge = 8 * time.Hour
	// AuthRequestTTL bounds the time from /authorize to the confirmation.
	AuthRequestTTL = 15 * time.Minute
	// AuthCodeTTL bounds an authorization code's life (RFC 6749 §4.1.2
	// recommends at most 10 minutes; one is plenty for a redirect).
	AuthCodeTTL = 60 * time.Second
)

// IDTokenType is the JWS typ of actas ID tokens, distinct from at+jwt so
// that neither can pass for the other.
const IDTokenType = "JWT"

// NewAuthRequest stores an authorization request that the surface has
// validated, with a fresh ID, upstream nonce and PKCE verifier. It returns
// the stored request and the secret of the cookie that binds it to this
// browser.
func (s *Service) NewAuthRequest(ctx context.Context, a storage.AuthRequest) (storage.AuthRequest, string, error) {
	browser := randomToken(32)
	now := s.now()
	a.ID, a.BrowserHash = randomToken(18), s.secrets.OPHash("browser", browser)
	if a.ClientID != "" {
		a.Upstream = s.cfg.SupportIDP.Issuer
	}
	a.UpstreamNonce, a.UpstreamVerifier = randomToken(18), randomToken(32)
	a.CreatedAt, a.ExpiresAt = now, now.Add(AuthRequestTTL)
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.store.PutAuthRequest(ctx, a); err != nil {
		return a, "", unavailable(err)
	}
	return a, browser, nil
}

// ErrAuthRequest is the one answer for an authorization request that is
// unknown, expired, answered, or another browser's.
var ErrAuthRequest error = errAuthRequest

var errAuthRequest = fail(KindNotFound, "this sign-in has expired or was started in another browser; start again from the product")

// AuthRequest returns a live authorization request, only to the browser
// that started it (browser is its cookie's value).
func (s *Service) AuthRequest(ctx context.Context, id, browser string) (storage.AuthRequest, error) {
	if id == "" || browser == "" || len(id) > 64 {
		return storage.AuthRequest{}, errAuthRequest
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	a, err := s.store.AuthRequest(ctx, id, s.now())
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return a, errAuthRequest
	case err != nil:
		return a, unavailable(err)
	case subtle.ConstantTimeCompare(a.BrowserHash, s.secrets.OPHash("browser", browser)) != 1:
		return storage.AuthRequest{}, errAuthRequest
	}
	return a, nil
}

// SignInEngineer takes the ID token of an engineer's sign-in at the
// support IdP for request a: it is verified (signature, issuer, audience,
// expiry), its nonce must be a's, and the policy's engineer checks
// (groups, MFA) come before anything else: a refused engineer never sees
// a code form. It starts a session and returns it with its cookie secret.
func (s *Service) SignInEngineer(ctx context.Context, a storage.AuthRequest, rawIDToken string) (storage.Session, string, error) {
	id, err := s.support.Verify(ctx, rawIDToken)
	if err != nil {
		if errors.Is(err, ErrIdPDown) {
			return storage.Session{}, "", &Error{Kind: KindUnavailable, Message: "the support identity provider is unreachable; try again", cause: err}
		}
		s.log.InfoContext(ctx, "authorize: upstream ID token rejected", "err", err)
		return storage.Session{}, "", fail(KindUnauthenticated, "the support identity provider's answer could not be verified")
	}
	if !nonceMatches(id, a.UpstreamNonce) {
		return storage.Session{}, "", fail(KindUnauthenticated, "the support identity provider's answer is not for this sign-in (nonce)")
	}
	if id.Subject == "" {
		return storage.Session{}, "", fail(KindUnauthenticated, "the support identity provider named no subject (sub)")
	}
	eng := s.engineer(id)
	engActor := audit.Actor{Type: storage.ActorSupportEngineer, ID: eng.Sub, Iss: eng.Iss}
	if err := s.policy.Load().CheckEngineer(eng); err != nil {
		var pd *policy.Denied
		if errors.As(err, &pd) {
			s.appendAudit(ctx, s.event(engActor, "", audit.SessionStart, a.ClientID, audit.Denied, map[string]any{"rule": pd.Rule, "reason": pd.Reason}))
			return storage.Session{}, "", &Error{Kind: KindDenied, Message: pd.Reason, Rule: pd.Rule}
		}
		return storage.Session{}, "", err
	}
	sess, secret, err := s.newSession(ctx, storage.SessionEngineer, id, eng.Email)
	if err != nil {
		return storage.Session{}, "", err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.store.SetAuthRequestSession(ctx, a.ID, sess.ID); err != nil {
		return storage.Session{}, "", unavailable(err)
	}
	s.appendAudit(ctx, s.event(engActor, "", audit.SessionStart, sess.ID, audit.Success, map[string]any{"client_id": a.ClientID}))
	return sess, secret, nil
}

// nonceMatches is OIDC Core §3.1.3.7 step 11: the nonce ties an upstream
// ID token to the sign-in that asked for it.
func nonceMatches(id Identity, want string) bool {
	return subtle.ConstantTimeCompare([]byte(StringClaim(id.Claims, "nonce")), []byte(want)) == 1
}

// newSession starts a browser session of kind for a verified upstream ID
// token and returns it with its cookie secret (storage keeps its HMAC).
// auth_time is the token's when it has a plausible one, else now.
func (s *Service) newSession(ctx context.Context, kind string, id Identity, email string) (storage.Session, string, error) {
	now := s.now()
	authTime := now
	if at, ok := id.Claims["auth_time"].(float64); ok && at > 0 && time.Unix(int64(at), 0).Before(now.Add(s.skew)) {
		authTime = time.Unix(int64(at), 0)
	}
	raw, _ := json.Marshal(id.Claims)
	secret := randomToken(32)
	sess := storage.Session{
		ID: randomToken(18), SecretHash: s.secrets.OPHash("session", secret), Kind: kind,
		Subject: id.Subject, Issuer: id.Issuer, Email: email, Claims: raw,
		AMR: StringsClaim(id.Claims, "amr"), ACR: StringClaim(id.Claims, "acr"),
		AuthTime: authTime.UTC(), CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(SessionMaxAge),
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return storage.Session{}, "", unavailable(err)
	}
	return sess, secret, nil
}

var errNoSession = fail(KindUnauthenticated, "not signed in")

// Session returns the live session of kind of a cookie's secret.
func (s *Service) Session(ctx context.Context, kind, secret string) (storage.Session, error) {
	if secret == "" || len(secret) > 128 {
		return storage.Session{}, errNoSession
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := s.now()
	sess, err := s.store.SessionBySecret(ctx, kind, s.secrets.OPHash("session", secret), now, now.Add(-SessionIdle))
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return sess, errNoSession
	case err != nil:
		return sess, unavailable(err)
	}
	return sess, nil
}

// SessionEngineer is the engineer of a session, as the policy sees them.
func (s *Service) SessionEngineer(sess storage.Session) policy.Engineer {
	var c map[string]any
	json.Unmarshal(sess.Claims, &c) // written by SignInEngineer from a verified token
	return s.engineer(Identity{Subject: sess.Subject, Issuer: sess.Issuer, Claims: c})
}

// EngineerGrants lists the live grants a session's engineer redeemed.
func (s *Service) EngineerGrants(ctx context.Context, sess storage.Session) ([]storage.Grant, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	gs, err := s.store.EngineerGrants(ctx, sess.Subject, sess.Issuer, s.now())
	if err != nil {
		return nil, unavailable(err)
	}
	return gs, nil
}

// RedeemInBrowser is the redemption of token exchange, made by a signed-in
// engineer in the authorization flow of clientID: the same single use,
// failure counting and lockout, the same policy decision. It binds the
// grant and issues nothing; the authorization code does.
func (s *Service) RedeemInBrowser(ctx context.Context, sess storage.Session, clientID, tenant, code string) (storage.Grant, error) {
	if !TenantRE.MatchString(tenant) {
		return storage.Grant{}, fail(KindInvalid, "enter the customer's tenant identifier")
	}
	pol := s.policy.Load()
	code = strings.TrimSpace(code)
	if !isDigits(code, pol.Code.Length) {
		return storage.Grant{}, failf(KindInvalid, "a support code has %d digits", pol.Code.Length)
	}
	_, g, err := s.redeem(ctx, Exchange{ClientID: clientID, Tenant: tenant, Code: code}, s.SessionEngineer(sess), true)
	return g, err
}

// SessionGrant returns a live grant that the session's engineer redeemed.
func (s *Service) SessionGrant(ctx context.Context, sess storage.Session, grantID string) (storage.Grant, error) {
	gs, err := s.EngineerGrants(ctx, sess)
	if err != nil {
		return storage.Grant{}, err
	}
	for _, g := range gs {
		if g.ID == grantID {
			return g, nil
		}
	}
	return storage.Grant{}, fail(KindNotFound, "this grant has ended or is not yours")
}

// IssueAuthCode answers request a with an authorization code for grant,
// which the session's engineer redeemed; the request is used up.
func (s *Service) IssueAuthCode(ctx context.Context, a storage.AuthRequest, sess storage.Session, grantID string) (string, error) {
	g, err := s.SessionGrant(ctx, sess, grantID)
	if err != nil {
		return "", err
	}
	code := "actas_ac_" + randomToken(32)
	now := s.now()
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err = s.store.CreateAuthCode(ctx, storage.AuthCode{
		Hash: s.secrets.OPHash("code", code), ClientID: a.ClientID, RedirectURI: a.RedirectURI, CodeChallenge: a.CodeChallenge,
		Nonce: a.Nonce, SessionID: sess.ID, GrantID: g.ID, TenantID: g.TenantID, Scope: a.Scope,
		AuthTime: sess.AuthTime, AMR: sess.AMR, ACR: sess.ACR, CreatedAt: now, ExpiresAt: now.Add(AuthCodeTTL),
	}, a.ID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return "", errAuthRequest
	case err != nil:
		return "", unavailable(err)
	}
	return code, nil
}

// CodeExchange is an RFC 6749 §4.1.3 token request.
type CodeExchange struct {
	ClientID       string
	ClientAudience string
	Code           string
	RedirectURI    string
	Verifier       string // RFC 7636 code_verifier
	Binding
}

var errAuthCode = fail(KindGrant, "the authorization code is invalid, expired, used, or was issued to another client, redirect_uri or PKCE challenge")

// ExchangeCode redeems an authorization code once for an access token, a
// refresh token and an ID token (OIDC Core §3.1.3.3). A code presented
// twice ends the grant it was issued for.
func (s *Service) ExchangeCode(ctx context.Context, x CodeExchange) (*Issued, string, error) {
	if len(x.Code) > 128 || !pkceVerifierOK(x.Verifier) {
		return nil, "", errAuthCode
	}
	sum := sha256.Sum256([]byte(x.Verifier))
	bind := storage.AuthCode{ClientID: x.ClientID, RedirectURI: x.RedirectURI, CodeChallenge: base64.RawURLEncoding.EncodeToString(sum[:])}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	pol := s.policy.Load()
	now := s.now()
	var issued *claims.Claims
	var refresh string
	var denied error
	reuse := s.event(audit.System, "", audit.GrantRevoke, "", audit.Success,
		map[string]any{"reason": "authorization_code_reuse", "client_id": x.ClientID})
	g, c, err := s.store.ExchangeAuthCode(ctx, s.secrets.OPHash("code", x.Code), bind, now, reuse,
		func(g storage.Grant, c storage.AuthCode) (storage.Issue, error) {
			eng, ig, err := decisionInputs(&g, policy.Tenant{ID: g.TenantID, SupportAccess: true}, true)
			if err != nil {
				return storage.Issue{}, err
			}
			d, err := pol.DecideRedeem(eng, ig, now)
			if err != nil {
				denied = err
				return storage.Issue{}, err
			}
			scope, err := chooseScope(d.Scopes, apiScopes(c.Scope))
			if err != nil {
				denied = err
				return storage.Issue{}, err
			}
			is, cl, rt := s.mint(now, x.ClientID, x.ClientAudience, d.Role, scope, &g, pol, x.Binding)
			is.Token.SID, is.Refresh.SID = c.SessionID, c.SessionID
			issued, refresh = cl, rt
			a := audit.Actor{Type: storage.ActorSupportEngineer, ID: g.EngineerSub, Iss: g.EngineerIss}
			is.Events = []storage.AuditEvent{s.event(a, g.TenantID, audit.TokenIssue, cl.Jti, audit.Success,
				map[string]any{"sub": g.GrantedBy, "act": g.EngineerSub, "act_email": g.EngineerEmail, "grant_id": g.ID, "client_id": x.ClientID, "sid": c.SessionID, "via": "authorization_code"})}
			return is, nil
		})
	var pd *policy.Denied
	var se *Error
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrNotFound):
		return nil, "", errAuthCode
	case errors.As(denied, &pd):
		return nil, "", &Error{Kind: KindDenied, Message: pd.Reason, Rule: pd.Rule}
	case errors.As(denied, &se):
		return nil, "", se
	default:
		return nil, "", unavailable(err)
	}
	is, err := s.sign(issued, refresh, g)
	if err != nil {
		return nil, "", err
	}
	idt, err := s.idToken(issued, c)
	return is, idt, err
}

// oidcScopes are the OpenID Connect scopes of an authorization request;
// they name claims of the ID token, not permissions at the product.
var oidcScopes = []string{"openid", "profile", "email", "offline_access"}

// apiScopes are the requested scopes that are not OIDC's own.
func apiScopes(scope string) []string {
	var out []string
	for _, sc := range strings.Fields(scope) {
		if !slices.Contains(oidcScopes, sc) {
			out = append(out, sc)
		}
	}
	return out
}

// pkceVerifierOK checks RFC 7636 §4.1: 43 to 128 unreserved characters.
func pkceVerifierOK(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// idToken is the OIDC Core §2 ID token of an authorization code: the
// customer as sub, the engineer as act, the grant's scope, the session's
// sid and the engineer's sign-in (auth_time, amr, acr). Its exp is the
// access token's, which never passes the grant's.
func (s *Service) idToken(at *claims.Claims, c storage.AuthCode) (string, error) {
	body := map[string]any{
		"iss": at.Iss, "sub": at.Sub, "aud": c.ClientID, "exp": at.Exp, "iat": at.Iat,
		"auth_time": c.AuthTime.Unix(), "sid": c.SessionID,
		"act": at.Act, "tenant": at.Tenant, "roles": at.Roles, "environments": at.Environments,
		"grant_id": at.GrantID, "grant_exp": at.GrantExp,
	}
	if c.Nonce != "" {
		body["nonce"] = c.Nonce
	}
	if len(at.Resources) > 0 {
		body["resources"] = at.Resources
	}
	if at.Ticket != "" {
		body["ticket"] = at.Ticket
	}
	if len(c.AMR) > 0 {
		body["amr"] = c.AMR
	}
	if c.ACR != "" {
		body["acr"] = c.ACR
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	return s.keys.KeySet().SignTyped(IDTokenType, payload)
}

// IDTokenHint reads an ID token actas issued, as RP-Initiated Logout 1.0
// §2 allows: signature and issuer checked, expiry not (the hint is often
// old). It returns the token's sid and client (aud).
func (s *Service) IDTokenHint(raw string) (sid, clientID string, err error) {
	payload, err := s.keys.KeySet().VerifyTyped(raw, IDTokenType)
	if err != nil {
		return "", "", fail(KindInvalid, "id_token_hint is not an ID token issued by this server")
	}
	var c struct {
		Iss string `json:"iss"`
		Aud string `json:"aud"`
		SID string `json:"sid"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Iss != s.cfg.Issuer {
		return "", "", fail(KindInvalid, "id_token_hint is not an ID token issued by this server")
	}
	return c.SID, c.Aud, nil
}

// EndSession ends a browser session: the tokens issued in it are revoked
// and the clients that hold them told by back-channel logout.
func (s *Service) EndSession(ctx context.Context, sess storage.Session) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	a := audit.Actor{Type: storage.ActorSupportEngineer, ID: sess.Subject, Iss: sess.Issuer}
	return s.endSession(ctx, a, "", sess.ID, "logout")
}

// endSession ends session id (audited in tenant's chain) and what was
// issued in it.
func (s *Service) endSession(ctx context.Context, a audit.Actor, tenant, id, reason string) error {
	ev := s.event(a, "", audit.TokenRevoke, "", audit.Success, nil)
	ended, err := s.store.EndSession(ctx, id, s.now(), reason, ev)
	if err != nil {
		return unavailable(err)
	}
	if ended {
		s.appendAudit(ctx, s.event(a, tenant, audit.SessionEnd, id, audit.Success, map[string]any{"reason": reason}))
	}
	return nil
}

// EndExpiredSessions ends the sessions past their absolute limit, as a
// logout would: what they issued is revoked and the clients told. The idle
// limit only makes the browser sign in again; it ends no tokens, since an
// engineer works in the product, not at actas.
func (s *Service) EndExpiredSessions(ctx context.Context) {
	ids, err := s.store.ExpiredSessions(ctx, s.now(), 100)
	for _, id := range ids {
		if err == nil {
			err = s.endSession(ctx, audit.System, "", id, "session_expired")
		}
	}
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "ending expired sessions", "err", err)
	}
}

// PruneOP deletes expired authorization requests, codes and sessions;
// failures are logged and retried at the next pass.
func (s *Service) PruneOP(ctx context.Context) {
	if _, err := s.store.PruneOP(ctx, s.now(), 1000); err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "pruning authorization requests and sessions", "err", err)
	}
}
