package engineer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/actas/actas/rp/dpop"
)

// Token-exchange names (RFC 8693 and actas's code type).
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	typeSupportCode    = "urn:actas:params:oauth:token-type:support-code"
	typeIDToken        = "urn:ietf:params:oauth:token-type:id_token"
)

// Client runs the engineer's commands against one broker.
type Client struct {
	Broker string // validated by CheckBroker
	Dir    string // the cache directory (Dir())
	HTTP   *http.Client
	Stderr io.Writer // where messages for the person go; stdout is for results
	Now    func() time.Time
	// OpenBrowser opens a URL for sign-in; nil prints it instead.
	OpenBrowser func(url string) error
}

func (cl *Client) now() time.Time {
	if cl.Now != nil {
		return cl.Now()
	}
	return time.Now()
}

// withCache runs fn on the broker's cache under the cache lock and saves
// it afterwards if fn changed it (fn returns true).
func (cl *Client) withCache(fn func(c *Cache) (bool, error)) error {
	path := Path(cl.Dir, cl.Broker)
	unlock, err := lockCache(path)
	if err != nil {
		return errorf(ExitError, "locking %s: %v", path, err)
	}
	defer unlock()
	c, err := load(cl.Dir, cl.Broker)
	if err != nil {
		return err
	}
	changed, err := fn(c)
	if changed {
		if serr := c.save(); serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

// RedeemOptions name a code to redeem.
type RedeemOptions struct {
	Tenant, Code, Audience string
	NoDPoP                 bool // accept a bearer token (for products that cannot check DPoP)
}

// Redeem exchanges a support code for tokens acting as the customer.
func (cl *Client) Redeem(ctx context.Context, o RedeemOptions) (*Grant, error) {
	var out *Grant
	err := cl.withCache(func(c *Cache) (bool, error) {
		d, err := cl.discover(ctx)
		if err != nil {
			return false, err
		}
		changed, err := cl.freshLogin(ctx, c)
		if err != nil {
			return changed, err
		}
		form := url.Values{
			"grant_type": {grantTokenExchange}, "tenant": {o.Tenant},
			"subject_token": {o.Code}, "subject_token_type": {typeSupportCode},
			"actor_token": {c.Login.IDToken}, "actor_token_type": {typeIDToken},
		}
		if o.Audience != "" {
			form.Set("audience", o.Audience)
		}
		var tr tokenResponse
		if err := cl.post(ctx, c, d.TokenEndpoint, form, !o.NoDPoP, &tr); err != nil {
			return changed, redeemError(err, o.Tenant)
		}
		g := Grant{DPoP: !o.NoDPoP}
		if err := g.store(c, &tr); err != nil {
			return changed, err
		}
		c.drop(g.ID)
		c.Grants = append(c.Grants, g)
		out = &g
		return true, nil
	})
	return out, err
}

func redeemError(err error, tenant string) error {
	var oe *oauthError
	if !errors.As(err, &oe) {
		return err
	}
	switch oe.Code {
	case "slow_down":
		return errorf(ExitLocked, "locked out: %s", oe)
	case "invalid_client", "unauthorized_client":
		return errorf(ExitError, "the broker refused the CLI's client: %s (ask its operator to check cli_client_id)", oe)
	}
	return errorf(ExitRefused, "the broker refused the code for tenant %s: %s", tenant, oe)
}

// Token returns a valid access token of the grant named by id or tenant,
// refreshing it first when it is expired or about to be.
func (cl *Client) Token(ctx context.Context, id, tenant string) (string, error) {
	var tok string
	err := cl.withCache(func(c *Cache) (bool, error) {
		g, err := c.grant(id, tenant)
		if err != nil {
			return false, err
		}
		if !cl.stale(g) {
			tok = g.AccessToken
			return false, nil
		}
		changed, err := cl.refresh(ctx, c, g)
		if err == nil {
			tok = g.AccessToken
		}
		return changed, err
	})
	return tok, err
}

// stale: expired, or within a fifth of its lifetime (at most 30s) of it.
func (cl *Client) stale(g *Grant) bool {
	margin := min(g.Expiry.Sub(g.IssuedAt)/5, 30*time.Second)
	return !cl.now().Before(g.Expiry.Add(-margin))
}

// refresh renews g's tokens; a refusal means the grant has ended, and it
// leaves the cache.
func (cl *Client) refresh(ctx context.Context, c *Cache, g *Grant) (bool, error) {
	if g.RefreshToken == "" {
		return false, errorf(ExitGrantEnded, "the token of grant %s expired and there is no refresh token: redeem a new code", g.ID)
	}
	d, err := cl.discover(ctx)
	if err != nil {
		return false, err
	}
	var tr tokenResponse
	err = cl.post(ctx, c, d.TokenEndpoint, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}}, g.DPoP, &tr)
	var oe *oauthError
	if errors.As(err, &oe) && oe.Code == "invalid_grant" {
		id, tenant := g.ID, g.Tenant
		c.drop(id)
		return true, errorf(ExitGrantEnded, "grant %s for tenant %s has ended (terminated, revoked or expired): ask the customer for a new support code", id, tenant)
	}
	if errors.As(err, &oe) {
		return false, errorf(ExitRefused, "the broker refused to refresh grant %s: %s", g.ID, oe)
	}
	if err != nil {
		return false, err
	}
	return true, g.store(c, &tr)
}

// Proof makes a DPoP proof for one request with the grant's token.
func (cl *Client) Proof(ctx context.Context, id, tenant, method, target string) (string, error) {
	var p string
	err := cl.withCache(func(c *Cache) (bool, error) {
		g, err := c.grant(id, tenant)
		if err != nil {
			return false, err
		}
		if !g.DPoP {
			return false, errorf(ExitUsage, "grant %s has a bearer token (redeemed with --no-dpop): it needs no proof", g.ID)
		}
		if _, err := dpop.NormalizeURL(target); err != nil {
			return false, errorf(ExitUsage, "--url must be an absolute http(s) URL, got %q", target)
		}
		p, err = c.key.Proof(method, target, g.AccessToken, cl.now())
		return false, err
	})
	return p, err
}

// Status returns the cache as it stands.
func (cl *Client) Status() (*Cache, error) {
	var out *Cache
	err := cl.withCache(func(c *Cache) (bool, error) {
		out = c
		return false, nil
	})
	return out, err
}

// Logout revokes every grant's refresh token at the broker, which ends the
// grant (its access tokens introspect inactive), then deletes the cache.
// If the broker cannot be reached the cache stays, unless force.
func (cl *Client) Logout(ctx context.Context, force bool) (ended int, err error) {
	err = cl.withCache(func(c *Cache) (bool, error) {
		d, err := cl.discover(ctx)
		if err != nil && !force {
			return false, err
		}
		var kept []Grant
		for _, g := range c.Grants {
			if d == nil || g.RefreshToken == "" {
				continue
			}
			if err := cl.post(ctx, c, d.RevocationEndpoint, url.Values{"token": {g.RefreshToken}, "token_type_hint": {"refresh_token"}}, false, nil); err != nil {
				if !force {
					kept = append(kept, g)
					continue
				}
			}
			ended++
		}
		if len(kept) > 0 {
			c.Grants = kept
			return true, errorf(ExitUnreachable, "%d grant(s) could not be ended at the broker and stay in the cache: run 'actas support logout' again (or --force to delete the cache anyway)", len(kept))
		}
		if err := os.Remove(c.path); err != nil {
			return false, errorf(ExitError, "deleting %s: %v", c.path, err)
		}
		return false, nil
	})
	return ended, err
}
