package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/actas/actas/internal/strictyaml"
)

// Config is the operator configuration. Field tags are the keys of
// actas.yaml; every key can also be set through ACTAS_<PATH> (for example
// ACTAS_SUPPORT_IDP_ISSUER), list-valued keys as YAML flow text.
type Config struct {
	Issuer string `yaml:"issuer"`
	Listen string `yaml:"listen"`
	// MetricsListen, when set, serves /metrics on its own listener (and
	// not on Listen), so that it need not be public.
	MetricsListen string `yaml:"metrics_listen"`
	// DrainDelay is how long, after SIGTERM, actas keeps serving with
	// /readyz answering 503 before it stops accepting connections, so
	// that a load balancer stops sending it traffic first.
	DrainDelay    strictyaml.Duration `yaml:"drain_delay"`
	Storage       string              `yaml:"storage"`
	PolicyFile    string              `yaml:"policy_file"`
	SecretKeyFile string              `yaml:"secret_key_file"`
	// StorageTimeout bounds every storage call made for a request: past it
	// the request answers 503 temporarily_unavailable instead of hanging
	// while the database stalls.
	StorageTimeout strictyaml.Duration `yaml:"storage_timeout"`
	Keys           Keys                `yaml:"keys"`
	SupportIDP     SupportIDP          `yaml:"support_idp"`
	CustomerIDPs   []CustomerIDP       `yaml:"customer_idps"`
	Clients        []Client            `yaml:"clients"`
	// CLIClientID is the public client the engineer CLI exchanges and
	// refreshes as, published in discovery; "" means DefaultCLIClientID.
	CLIClientID   string        `yaml:"cli_client_id"`
	TicketHook    TicketHook    `yaml:"ticket_hook"`
	Notifications Notifications `yaml:"notifications"`
	Retention     Retention     `yaml:"retention"`
}

// Retention says how long records are kept; 0s keeps forever. Audit
// pruning seals a checkpoint first, so the chain stays verifiable.
type Retention struct {
	EngineerRecords    strictyaml.Duration `yaml:"engineer_records"`
	ArchiveGrantsAfter strictyaml.Duration `yaml:"archive_grants_after"`
	AuditEvents        strictyaml.Duration `yaml:"audit_events"`
}

// Notifications configures delivery of the outbox: email over SMTP and
// webhooks signed with HMAC-SHA256 under WebhookSecretEnv's secret.
type Notifications struct {
	SMTP             SMTP   `yaml:"smtp"`
	WebhookSecretEnv string `yaml:"webhook_secret_env"`
	// AllowLoopbackWebhooks lets webhooks reach loopback addresses (dev
	// and tests). Private and link-local addresses are always refused.
	AllowLoopbackWebhooks bool `yaml:"allow_loopback_webhooks"`

	// WebhookSecret is resolved from WebhookSecretEnv by Load.
	WebhookSecret string `yaml:"-"`
}

// SMTP is the mail relay. TLS is "starttls" (required), "implicit"
// (SMTPS) or "none" (loopback relays only).
type SMTP struct {
	Host        string `yaml:"host"`
	Port        int    `yaml:"port"`
	Username    string `yaml:"username"`
	PasswordEnv string `yaml:"password_env"`
	From        string `yaml:"from"`
	TLS         string `yaml:"tls"`

	// Password is resolved from PasswordEnv by Load.
	Password string `yaml:"-"`
}

// TicketHook enables POST /hooks/tickets: the ticket system signs each call
// with HMAC-SHA256 under the secret in SecretEnv; calls older than MaxAge
// are refused.
type TicketHook struct {
	SecretEnv string              `yaml:"secret_env"`
	MaxAge    strictyaml.Duration `yaml:"max_age"`

	// Secret is resolved from SecretEnv by Load.
	Secret string `yaml:"-"`
}

// Keys configures the token signing keys.
type Keys struct {
	Algorithm   string              `yaml:"algorithm"`
	RotateEvery strictyaml.Duration `yaml:"rotate_every"`
}

// SupportIDP is the support organisation's OIDC provider; its ID tokens are
// the actor tokens of RFC 8693 exchanges.
type SupportIDP struct {
	Issuer          string `yaml:"issuer"`
	ClientID        string `yaml:"client_id"`
	ClientSecretEnv string `yaml:"client_secret_env"`
	GroupsClaim     string `yaml:"groups_claim"`

	// ClientSecret is resolved from ClientSecretEnv by Load; "" signs in
	// as a public client with PKCE.
	ClientSecret string `yaml:"-"`
}

// CustomerIDP is an issuer whose tokens authenticate customer users on the
// customer API. TenantClaim and RoleClaim name the claims that carry the
// user's tenant and role.
type CustomerIDP struct {
	Issuer      string `yaml:"issuer"`
	Audience    string `yaml:"audience"`
	TenantClaim string `yaml:"tenant_claim"`
	RoleClaim   string `yaml:"role_claim"`
	// SCIMSubject is the SCIM attribute equal to sub in this issuer's
	// tokens: externalId (default) or userName.
	SCIMSubject string `yaml:"scim_subject"`
	// ClientID is actas's client at this IdP for the self-service page's
	// sign-in (redirect {issuer}/ui/callback); "" offers no page sign-in.
	ClientID        string `yaml:"client_id"`
	ClientSecretEnv string `yaml:"client_secret_env"`
	// ClientSecret is resolved from ClientSecretEnv; "" signs in as a
	// public client with PKCE.
	ClientSecret string `yaml:"-"`
}

// Client is a registered OAuth client (a product). A client without
// SecretEnv is public.
type Client struct {
	ID                   string   `yaml:"id"`
	SecretEnv            string   `yaml:"secret_env"`
	RedirectURIs         []string `yaml:"redirect_uris"`
	Audience             string   `yaml:"audience"`
	CanIntrospect        bool     `yaml:"can_introspect"`
	BackchannelLogoutURI string   `yaml:"backchannel_logout_uri"`
	// PostLogoutRedirectURIs are where RP-Initiated Logout may send the
	// browser afterwards, matched exactly.
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	// RequireDPoP refuses token requests of this client without a DPoP
	// proof (RFC 9449 §5.2, dpop_bound_access_tokens).
	RequireDPoP bool `yaml:"require_dpop"`

	// Secret is resolved from the environment variable SecretEnv by Load.
	Secret string `yaml:"-"`
}

// Supported signing algorithms.
const (
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
	AlgEdDSA = "EdDSA"
)

// SecretKeyEnv is the environment variable holding the root secret.
const SecretKeyEnv = "ACTAS_SECRET_KEY"

// MaxFileSize bounds the configuration file.
const MaxFileSize = 1 << 20

// Error lists every problem found in a configuration, each naming its file
// position or key.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: invalid configuration:\n  %s", e.File, strings.Join(e.Problems, "\n  "))
}

// Load reads the file at path, applies ACTAS_ overrides from getenv, fills
// defaults and validates. getenv is injectable for tests; pass os.Getenv.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := strictyaml.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, getenv)
}

// LoadStorage is Load for commands that only open storage (migrate, keys,
// audit): the file is parsed as strictly, but only storage, the root
// secret's source and the key algorithm are validated, so they run without
// the identity providers' or clients' secrets.
func LoadStorage(path string, getenv func(string) string) (*Config, error) {
	data, err := strictyaml.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, err
	}
	c, err := decode(path, data, getenv)
	if err != nil {
		return nil, err
	}
	var p problems
	c.validateStorage(&p, getenv)
	if len(p) > 0 {
		return nil, &Error{File: path, Problems: p}
	}
	return c, nil
}

// Parse is Load on bytes already read; name is used in messages.
func Parse(name string, data []byte, getenv func(string) string) (*Config, error) {
	c, err := decode(name, data, getenv)
	if err != nil {
		return nil, err
	}
	if probs := c.Validate(getenv); len(probs) > 0 {
		return nil, &Error{File: name, Problems: probs}
	}
	return c, nil
}

// decode parses, applies ACTAS_ overrides, resolves secrets and fills
// defaults; it validates nothing.
func decode(name string, data []byte, getenv func(string) string) (*Config, error) {
	var c Config
	if _, err := strictyaml.Decode(data, &c); err != nil {
		var probs strictyaml.Problems
		if errors.As(err, &probs) {
			e := &Error{File: name}
			for _, p := range probs {
				e.Problems = append(e.Problems, fmt.Sprintf("%s:%d:%d: %s", name, p.Line, p.Column, p.Msg))
			}
			return nil, e
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := c.applyEnv(getenv); err != nil {
		return nil, &Error{File: name, Problems: []string{err.Error()}}
	}
	c.resolveSecrets(getenv)
	c.SetDefaults()
	return &c, nil
}

// SetDefaults fills keys the operator left out.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.Storage == "" {
		c.Storage = "sqlite://actas.db"
	}
	if c.Keys.Algorithm == "" {
		c.Keys.Algorithm = AlgES256
	}
	if c.Keys.RotateEvery == 0 {
		c.Keys.RotateEvery = strictyaml.Duration(720 * time.Hour)
	}
	if c.SupportIDP.GroupsClaim == "" {
		c.SupportIDP.GroupsClaim = "groups"
	}
	if c.Notifications.SMTP.Host != "" && c.Notifications.SMTP.TLS == "" {
		c.Notifications.SMTP.TLS = "starttls"
	}
	if c.Notifications.SMTP.Host != "" && c.Notifications.SMTP.Port == 0 {
		c.Notifications.SMTP.Port = 587
	}
	if c.Retention.EngineerRecords == 0 {
		c.Retention.EngineerRecords = strictyaml.Duration(60 * 24 * time.Hour)
	}
	if c.Retention.ArchiveGrantsAfter == 0 {
		c.Retention.ArchiveGrantsAfter = strictyaml.Duration(90 * 24 * time.Hour)
	}
	if c.TicketHook.MaxAge == 0 {
		c.TicketHook.MaxAge = strictyaml.Duration(5 * time.Minute)
	}
	if c.StorageTimeout == 0 {
		c.StorageTimeout = strictyaml.Duration(2 * time.Second)
	}
}

func (c *Config) resolveSecrets(getenv func(string) string) {
	if c.TicketHook.SecretEnv != "" {
		c.TicketHook.Secret = getenv(c.TicketHook.SecretEnv)
	}
	if c.Notifications.WebhookSecretEnv != "" {
		c.Notifications.WebhookSecret = getenv(c.Notifications.WebhookSecretEnv)
	}
	if c.Notifications.SMTP.PasswordEnv != "" {
		c.Notifications.SMTP.Password = getenv(c.Notifications.SMTP.PasswordEnv)
	}
	if c.SupportIDP.ClientSecretEnv != "" {
		c.SupportIDP.ClientSecret = getenv(c.SupportIDP.ClientSecretEnv)
	}
	for i := range c.CustomerIDPs {
		if env := c.CustomerIDPs[i].ClientSecretEnv; env != "" {
			c.CustomerIDPs[i].ClientSecret = getenv(env)
		}
	}
	for i := range c.Clients {
		if c.Clients[i].SecretEnv != "" {
			c.Clients[i].Secret = getenv(c.Clients[i].SecretEnv)
		}
	}
}

// Validate reports every problem with c; an empty result means valid. It
// reads nothing but getenv (for the secrets a key names).
func (c *Config) Validate(getenv func(string) string) []string {
	var p problems
	c.validateServer(&p, getenv)
	c.validateIdPs(&p, getenv)
	c.validateDelivery(&p)
	c.validateClients(&p)
	return p
}

// problems collects "key: reason" lines.
type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// validateServer checks issuer, listen, storage, policy file, keys and the root secret.
func (c *Config) validateServer(p *problems, getenv func(string) string) {
	if c.Issuer == "" {
		p.add("issuer", "required")
	} else if err := CheckIssuerURL(c.Issuer); err != nil {
		p.add("issuer", "%v", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.add("listen", "want host:port, got %q", c.Listen)
	}
	c.validateStorage(p, getenv)
	if c.PolicyFile == "" {
		p.add("policy_file", "required")
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			p.add("metrics_listen", "want host:port, got %q", c.MetricsListen)
		} else if c.MetricsListen == c.Listen {
			p.add("metrics_listen", "must differ from listen")
		}
	}
	if d := c.DrainDelay.Std(); d > time.Minute {
		p.add("drain_delay", "must be at most 60s")
	}
	if d := c.StorageTimeout.Std(); d < time.Second || d > time.Minute {
		p.add("storage_timeout", "must be between 1s and 60s")
	}
	if c.Keys.RotateEvery.Std() < time.Hour {
		p.add("keys.rotate_every", "must be at least 1h")
	}
}

// validateStorage checks what opening storage needs: the storage URL, the
// root secret's source and the algorithm of keys it may create.
func (c *Config) validateStorage(p *problems, getenv func(string) string) {
	kind, _, err := StorageKind(c.Storage)
	if err != nil {
		p.add("storage", "%v", err)
	}
	switch c.Keys.Algorithm {
	case AlgES256, AlgRS256, AlgEdDSA:
	default:
		p.add("keys.algorithm", "must be one of ES256, RS256, EdDSA; got %q", c.Keys.Algorithm)
	}
	if kind == "postgres" && getenv(SecretKeyEnv) == "" && c.SecretKeyFile == "" {
		p.add("secret_key_file", "PostgreSQL storage needs a shared root secret: set %s or secret_key_file", SecretKeyEnv)
	}
}

// validateIdPs checks the support and customer identity providers.
func (c *Config) validateIdPs(p *problems, getenv func(string) string) {
	if c.SupportIDP.Issuer == "" {
		p.add("support_idp.issuer", "required")
	} else if err := checkURL(c.SupportIDP.Issuer); err != nil {
		p.add("support_idp.issuer", "%v", err)
	}
	if c.SupportIDP.ClientID == "" {
		p.add("support_idp.client_id", "required (the audience of the engineers' ID tokens)")
	}
	if env := c.SupportIDP.ClientSecretEnv; env != "" && getenv(env) == "" {
		p.add("support_idp.client_secret_env", "environment variable %s is empty", env)
	}
	if len(c.CustomerIDPs) == 0 {
		p.add("customer_idps", "at least one customer issuer is required")
	}
	issuers := map[string]bool{}
	for i, idp := range c.CustomerIDPs {
		key := fmt.Sprintf("customer_idps[%d]", i)
		if idp.Issuer == "" {
			p.add(key+".issuer", "required")
		} else if err := checkURL(idp.Issuer); err != nil {
			p.add(key+".issuer", "%v", err)
		} else if issuers[idp.Issuer] {
			p.add(key+".issuer", "duplicate issuer %q", idp.Issuer)
		}
		issuers[idp.Issuer] = true
		if idp.Audience == "" {
			p.add(key+".audience", "required")
		}
		if env := idp.ClientSecretEnv; env != "" && (idp.ClientID == "" || getenv(env) == "") {
			p.add(key+".client_secret_env", "needs client_id and a non-empty environment variable %s", env)
		}
		if idp.TenantClaim == "" {
			p.add(key+".tenant_claim", "required")
		}
		if idp.RoleClaim == "" {
			p.add(key+".role_claim", "required")
		}
		if idp.SCIMSubject != "" && idp.SCIMSubject != "externalId" && idp.SCIMSubject != "userName" {
			p.add(key+".scim_subject", "must be externalId or userName, got %q", idp.SCIMSubject)
		}
	}
}

// validateDelivery checks the ticket hook, notifications and retention.
func (c *Config) validateDelivery(p *problems) {
	if c.TicketHook.SecretEnv != "" && len(c.TicketHook.Secret) < 32 {
		p.add("ticket_hook.secret_env", "environment variable %s must hold a secret of at least 32 bytes", c.TicketHook.SecretEnv)
	}
	if age := c.TicketHook.MaxAge.Std(); age < 10*time.Second || age > time.Hour {
		p.add("ticket_hook.max_age", "must be between 10s and 1h")
	}
	if n := c.Notifications; n.SMTP.Host != "" {
		if n.SMTP.From == "" {
			p.add("notifications.smtp.from", "required")
		}
		switch n.SMTP.TLS {
		case "starttls", "implicit":
		case "none":
			if !IsLoopback(n.SMTP.Host) {
				p.add("notifications.smtp.tls", "none is allowed only for a loopback relay")
			}
		default:
			p.add("notifications.smtp.tls", "must be starttls, implicit or none")
		}
		if n.SMTP.PasswordEnv != "" && n.SMTP.Password == "" {
			p.add("notifications.smtp.password_env", "environment variable %s is empty", n.SMTP.PasswordEnv)
		}
	}
	if n := c.Notifications; n.WebhookSecretEnv != "" && len(n.WebhookSecret) < 32 {
		p.add("notifications.webhook_secret_env", "environment variable %s must hold a secret of at least 32 bytes", n.WebhookSecretEnv)
	}
	for key, d := range map[string]strictyaml.Duration{"retention.engineer_records": c.Retention.EngineerRecords,
		"retention.archive_grants_after": c.Retention.ArchiveGrantsAfter} {
		if d.Std() < 24*time.Hour {
			p.add(key, "must be at least 1d")
		}
	}
	if d := c.Retention.AuditEvents.Std(); d != 0 && d < 30*24*time.Hour {
		p.add("retention.audit_events", "must be 0s (keep forever) or at least 30d")
	}
}

// validateClients checks the registered clients.
func (c *Config) validateClients(p *problems) {
	ids := map[string]bool{}
	for i, cl := range c.Clients {
		key := fmt.Sprintf("clients[%d]", i)
		if cl.ID == "" {
			p.add(key+".id", "required")
		} else if ids[cl.ID] {
			p.add(key+".id", "duplicate client id %q", cl.ID)
		}
		ids[cl.ID] = true
		if cl.SecretEnv != "" && len(cl.Secret) < 16 {
			p.add(key+".secret_env", "environment variable %s must hold a secret of at least 16 bytes", cl.SecretEnv)
		}
		if cl.Audience == "" {
			p.add(key+".audience", "required")
		}
		if cl.CanIntrospect && cl.SecretEnv == "" {
			p.add(key+".can_introspect", "introspection needs client authentication: set secret_env")
		}
		for j, u := range cl.RedirectURIs {
			if err := checkURL(u); err != nil {
				p.add(fmt.Sprintf("%s.redirect_uris[%d]", key, j), "%v", err)
			}
		}
		for j, u := range cl.PostLogoutRedirectURIs {
			if err := checkURL(u); err != nil {
				p.add(fmt.Sprintf("%s.post_logout_redirect_uris[%d]", key, j), "%v", err)
			}
		}
		if cl.BackchannelLogoutURI != "" {
			if err := checkURL(cl.BackchannelLogoutURI); err != nil {
				p.add(key+".backchannel_logout_uri", "%v", err)
			}
		}
	}
	if c.CLIClientID != "" {
		cl, ok := c.Client(c.CLIClientID)
		switch {
		case !ok:
			p.add("cli_client_id", "%q is not a registered client (add it to clients, without secret_env)", c.CLIClientID)
		case cl.SecretEnv != "":
			p.add("cli_client_id", "client %q has a secret; the engineer CLI is a public client (RFC 8252): register it without secret_env", c.CLIClientID)
		}
	}
}

// DefaultCLIClientID is the engineer CLI's client when cli_client_id is unset.
const DefaultCLIClientID = "actas-cli"

// Client returns the registered client id.
func (c *Config) Client(id string) (Client, bool) {
	for _, cl := range c.Clients {
		if cl.ID == id {
			return cl, true
		}
	}
	return Client{}, false
}

// CLIClient is the engineer CLI's public client, if one is registered:
// cli_client_id, or DefaultCLIClientID when that names a public client.
func (c *Config) CLIClient() (string, bool) {
	id := c.CLIClientID
	if id == "" {
		id = DefaultCLIClientID
	}
	cl, ok := c.Client(id)
	return id, ok && cl.SecretEnv == ""
}

// StorageKind splits a storage URL into its kind ("sqlite" or "postgres")
// and the driver's data source.
func StorageKind(s string) (kind, dsn string, err error) {
	switch {
	case strings.HasPrefix(s, "sqlite://"):
		path := strings.TrimPrefix(s, "sqlite://")
		if path == "" || strings.ContainsAny(path, "?#") {
			return "", "", fmt.Errorf("want sqlite://<file path> without options, got %q", s)
		}
		return "sqlite", path, nil
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		if _, err := url.Parse(s); err != nil {
			return "", "", fmt.Errorf("invalid PostgreSQL URL")
		}
		return "postgres", s, nil
	}
	return "", "", fmt.Errorf("want sqlite://<file> or postgres://..., got %q", redactURL(s))
}

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User(u.User.Username())
		return u.String()
	}
	return s
}

// CheckIssuerURL enforces OIDC Discovery §3 on actas's own issuer: https
// (http only on loopback), no query or fragment, no trailing slash.
func CheckIssuerURL(s string) error {
	if err := checkURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("must not have a query or fragment")
	}
	if strings.HasSuffix(u.Path, "/") {
		return fmt.Errorf("must not end with a slash")
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("want an absolute http(s) URL, got %q", s)
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return fmt.Errorf("https is required for %q (http only on loopback)", s)
	}
	return nil
}

// IsLoopback reports whether host is localhost or a loopback address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
