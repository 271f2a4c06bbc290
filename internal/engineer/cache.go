package engineer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/actas/actas/rp/dpop"
)

// Cache is what the CLI keeps for one broker, in one 0600 file.
type Cache struct {
	Broker    string          `json:"broker"`
	CLIClient string          `json:"cli_client_id"`
	Support   SupportIdP      `json:"support_idp"`
	Login     *Login          `json:"login,omitempty"`
	DPoPKey   json.RawMessage `json:"dpop_key"` // private JWK; its thumbprint binds every token
	Grants    []Grant         `json:"grants"`

	key  *dpop.Key
	path string
}

// SupportIdP is where and as whom the engineer signs in.
type SupportIdP struct {
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
}

// Login is the engineer's sign-in at the support IdP.
type Login struct {
	IDToken      string    `json:"id_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"` // of the ID token
	Subject      string    `json:"sub"`
	Email        string    `json:"email,omitempty"`
}

// Grant is one redeemed grant and its current tokens.
type Grant struct {
	ID           string    `json:"grant_id"`
	Tenant       string    `json:"tenant"`
	Audience     string    `json:"audience"`
	Subject      string    `json:"sub"` // the customer acted as
	Roles        []string  `json:"roles"`
	Environments []string  `json:"environments"`
	GrantExpiry  time.Time `json:"grant_exp"`
	DPoP         bool      `json:"dpop"`
	AccessToken  string    `json:"access_token"`
	IssuedAt     time.Time `json:"issued_at"`
	Expiry       time.Time `json:"expiry"`
	RefreshToken string    `json:"refresh_token,omitempty"`
}

// Dir is the cache directory: $XDG_CONFIG_HOME/actas, else ~/.config/actas.
func Dir() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		if !filepath.IsAbs(d) {
			return "", errorf(ExitError, "XDG_CONFIG_HOME must be an absolute path, got %q", d)
		}
		return filepath.Join(d, "actas"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errorf(ExitError, "cannot find a config directory: set XDG_CONFIG_HOME or HOME")
	}
	return filepath.Join(home, ".config", "actas"), nil
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9.-]+`)

// Path is the cache file of a broker: readable host and port, plus a hash
// of the whole URL so that two brokers never share a file.
func Path(dir, broker string) string {
	u, _ := url.Parse(broker)
	sum := sha256.Sum256([]byte(broker))
	name := strings.Trim(unsafeName.ReplaceAllString(u.Host, "_"), "_")
	return filepath.Join(dir, fmt.Sprintf("%s-%s.json", name, hex.EncodeToString(sum[:4])))
}

// CheckBroker validates a broker URL: https, or http on a loopback host;
// no query, fragment or trailing slash.
func CheckBroker(s string) (string, error) {
	if s == "" {
		return "", errorf(ExitUsage, "no broker: pass --broker URL or set ACTAS_BROKER")
	}
	s = strings.TrimRight(s, "/")
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errorf(ExitUsage, "--broker must be a URL such as https://actas.example, got %q", s)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return "", errorf(ExitUsage, "--broker must use https (http only for a loopback address), got %q", s)
	}
	return s, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1" || strings.HasPrefix(host, "127.")
}

// load reads the cache of broker; a missing file is errNotSignedIn. A
// file others can read is refused, as ssh refuses a readable key.
func load(dir, broker string) (*Cache, error) {
	p := Path(dir, broker)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotSignedIn
	}
	if err != nil {
		return nil, errorf(ExitError, "reading %s: %v", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, errorf(ExitError, "reading %s: %v", p, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, errorf(ExitError, "%s is accessible to other users (mode %#o): it holds your tokens and key; run 'chmod 600 %s' or 'actas support logout'", p, st.Mode().Perm(), p)
	}
	var c Cache
	if err := json.NewDecoder(f).Decode(&c); err != nil {
		return nil, errorf(ExitError, "%s is not a valid actas cache (%v): delete it and run 'actas support login'", p, err)
	}
	if c.Broker != broker {
		return nil, errorf(ExitError, "%s belongs to broker %s, not %s", p, c.Broker, broker)
	}
	if c.key, err = dpop.ParseKey(c.DPoPKey); err != nil {
		return nil, errorf(ExitError, "%s holds no valid DPoP key: delete it and run 'actas support login'", p)
	}
	c.path = p
	return &c, nil
}

// save writes the cache atomically, 0600, in a 0700 directory.
func (c *Cache) save() error {
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return errorf(ExitError, "creating %s: %v", filepath.Dir(c.path), err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), ".cache-*.json")
	if err != nil {
		return errorf(ExitError, "writing the cache: %v", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(append(b, '\n'))
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), c.path)
		}
		if err == nil {
			return nil
		}
	}
	tmp.Close()
	return errorf(ExitError, "writing %s: %v", c.path, err)
}

// grant finds the grant --grant or --tenant names, or the only one.
func (c *Cache) grant(id, tenant string) (*Grant, error) {
	var match []*Grant
	for i := range c.Grants {
		g := &c.Grants[i]
		if (id == "" || g.ID == id) && (tenant == "" || g.Tenant == tenant) {
			match = append(match, g)
		}
	}
	switch {
	case len(match) == 1:
		return match[0], nil
	case len(c.Grants) == 0:
		return nil, errorf(ExitRefused, "no redeemed grants: run 'actas support redeem --tenant T --code CODE'")
	case len(match) == 0 && id != "":
		return nil, errorf(ExitRefused, "no grant %s in the cache; 'actas support status' lists them", id)
	case len(match) == 0:
		return nil, errorf(ExitRefused, "no grant for tenant %s; 'actas support status' lists them", tenant)
	}
	ids := make([]string, len(match))
	for i, g := range match {
		ids[i] = g.ID + " (" + g.Tenant + ")"
	}
	return nil, errorf(ExitUsage, "%d grants match: choose one with --grant: %s", len(match), strings.Join(ids, ", "))
}

func (c *Cache) drop(id string) {
	out := c.Grants[:0]
	for _, g := range c.Grants {
		if g.ID != id {
			out = append(out, g)
		}
	}
	c.Grants = out
}
