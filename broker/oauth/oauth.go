package oauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"slices"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/config"
)

// Token type and grant type URIs (RFC 8693 §3, and actas's own code type).
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantTypeRefreshToken  = "refresh_token"
	// GrantTypeAuthorizationCode redeems a code of the OpenID Provider flow.
	GrantTypeAuthorizationCode = "authorization_code"
	// GrantTypeClientCredentials gets a product's SSF stream bearer.
	GrantTypeClientCredentials = "client_credentials"
	TokenTypeSupportCode       = "urn:actas:params:oauth:token-type:support-code"
	TokenTypeIDToken           = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccessToken       = "urn:ietf:params:oauth:token-type:access_token"
)

// Handler serves the OAuth endpoints.
type Handler struct {
	core          *core.Service
	keys          core.KeySource
	clients       map[string]*client
	supportIDP    config.SupportIDP
	cliClient     string // "" when no public CLI client is registered
	log           *slog.Logger
	exchanges     *prometheus.CounterVec
	introspection *prometheus.CounterVec
}

type client struct {
	config.Client
	secretHash [32]byte
}

func (c *client) confidential() bool { return c.SecretEnv != "" }

// checkSecret compares in constant time (over hashes, so lengths leak
// nothing either).
func (c *client) checkSecret(secret string) bool {
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(h[:], c.secretHash[:]) == 1
}

// New builds the OAuth surface for the registered clients.
func New(svc *core.Service, keys core.KeySource, op *config.Config, log *slog.Logger, reg prometheus.Registerer) *Handler {
	h := &Handler{core: svc, keys: keys, clients: map[string]*client{}, supportIDP: op.SupportIDP, log: log,
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_token_requests_total", Help: "Token endpoint requests by grant type and outcome.",
		}, []string{"grant_type", "outcome"}),
		introspection: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_introspections_total", Help: "Introspection answers by result.",
		}, []string{"active"}),
	}
	reg.MustRegister(h.exchanges, h.introspection)
	for _, cl := range op.Clients {
		h.clients[cl.ID] = &client{Client: cl, secretHash: sha256.Sum256([]byte(cl.Secret))}
	}
	if id, ok := op.CLIClient(); ok {
		h.cliClient = id
	}
	return h
}

// Mount adds the OAuth routes to r.
func (h *Handler) Mount(r *mux.Router) {
	r.HandleFunc("/.well-known/openid-configuration", h.discovery).Methods(http.MethodGet)
	r.HandleFunc("/.well-known/oauth-authorization-server", h.discovery).Methods(http.MethodGet)
	r.HandleFunc("/jwks", h.jwks).Methods(http.MethodGet)
	// Methods are checked by parseForm so that a wrong method still gets
	// an RFC 6749 error body.
	r.HandleFunc("/token", h.token)
	r.HandleFunc("/introspect", h.introspect)
	r.HandleFunc("/revoke", h.revoke)
	r.HandleFunc("/userinfo", h.userinfo)
}

// discovery serves RFC 8414 / OIDC Discovery metadata listing what this
// server implements and nothing it does not.
func (h *Handler) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := h.core.Issuer()
	authMethods := []string{"client_secret_basic", "client_secret_post"}
	scopes := map[string]bool{}
	pol := h.core.Policy()
	for _, role := range pol.Roles() {
		for _, sc := range pol.Scopes(role.Name) {
			scopes[sc] = true
		}
	}
	scopes[core.ScopeSSF] = true // client_credentials, for SSF streams
	scopes["openid"] = true
	scopeList := make([]string, 0, len(scopes))
	for sc := range scopes {
		scopeList = append(scopeList, sc)
	}
	slices.Sort(scopeList)
	doc := map[string]any{
		"issuer":                               iss,
		"jwks_uri":                             iss + "/jwks",
		"token_endpoint":                       iss + "/token",
		"introspection_endpoint":               iss + "/introspect",
		"revocation_endpoint":                  iss + "/revoke",
		"grant_types_supported":                []string{GrantTypeAuthorizationCode, GrantTypeTokenExchange, GrantTypeRefreshToken, GrantTypeClientCredentials},
		"authorization_endpoint":               iss + "/authorize",
		"end_session_endpoint":                 iss + "/logout",
		"response_types_supported":             []string{"code"},
		"response_modes_supported":             []string{"query"},
		"code_challenge_methods_supported":     []string{"S256"},
		"prompt_values_supported":              []string{"none", "login", "consent"},
		"backchannel_logout_supported":         true,
		"backchannel_logout_session_supported": true,
		// RFC 9207: the iss parameter on every authorization response.
		"authorization_response_iss_parameter_supported": true,
		"claims_parameter_supported":                     false,
		"request_parameter_supported":                    false,
		"request_uri_parameter_supported":                false,
		"scopes_supported":                               scopeList,
		"token_endpoint_auth_methods_supported":          append([]string{"none"}, authMethods...),
		"introspection_endpoint_auth_methods_supported":  authMethods,
		"revocation_endpoint_auth_methods_supported":     append([]string{"none"}, authMethods...),
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          h.keys.KeySet().Algorithms(),
		"userinfo_endpoint":                              iss + "/userinfo",
		"dpop_signing_alg_values_supported":              dpopAlgs,
		"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "act",
			"tenant", "roles", "environments", "resources", "scope", "grant_id", "grant_exp", "ticket", "cnf",
			"sid", "nonce", "auth_time", "amr", "acr"},
		// Where and as whom engineers sign in, for the engineer CLI.
		"actas_support_idp": map[string]string{"issuer": h.supportIDP.Issuer, "client_id": h.supportIDP.ClientID},
	}
	if h.cliClient != "" {
		doc["actas_cli_client_id"] = h.cliClient
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(doc)
}

func (h *Handler) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Write(h.keys.KeySet().JWKS())
}

var errClientAuth = ErrInvalidClient.With("client authentication failed")

// request parses an OAuth endpoint's form and authenticates the client,
// writing the RFC 6749 error itself when either fails.
func (h *Handler) request(w http.ResponseWriter, r *http.Request, requireSecret bool) (form, *client, bool) {
	f, oe := parseForm(r)
	if oe == nil {
		var c *client
		if c, oe = h.authenticate(r, f, requireSecret); oe == nil {
			return f, c, true
		}
	}
	write(w, oe)
	return nil, nil, false
}

// authenticate implements RFC 6749 §2.3.1 (client_secret_basic and
// client_secret_post, never both) and public clients identified by
// client_id (§2.1). Unknown client and wrong secret get the same answer.
func (h *Handler) authenticate(r *http.Request, f form, requireSecret bool) (*client, *Error) {
	id, secret, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil, errClientAuth
		}
		if f["client_secret"] != "" {
			return nil, ErrInvalidRequest.With("use one client authentication method, not both")
		}
		if f["client_id"] != "" && f["client_id"] != id {
			return nil, ErrInvalidRequest.With("client_id does not match the authenticated client")
		}
	} else {
		id, secret = f["client_id"], f["client_secret"]
	}
	if id == "" {
		return nil, ErrInvalidClient.With("client authentication is required")
	}
	c, ok := h.clients[id]
	if !ok {
		return nil, errClientAuth
	}
	switch {
	case c.confidential() && !c.checkSecret(secret):
		return nil, errClientAuth
	case !c.confidential() && secret != "":
		return nil, errClientAuth
	case !c.confidential() && requireSecret:
		return nil, ErrInvalidClient.With("this endpoint requires an authenticated (confidential) client")
	}
	return c, nil
}

// fail writes err: a core refusal or an *Error as RFC 6749 JSON, anything
// else logged and answered as server_error.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) *Error {
	oe, ok := err.(*Error)
	if !ok {
		oe = fromCore(err)
	}
	if oe == nil || oe.status >= 500 {
		h.log.ErrorContext(r.Context(), "oauth: "+r.URL.Path, "err", err)
	}
	if oe == nil {
		oe = ErrServer
	}
	write(w, oe)
	return oe
}
