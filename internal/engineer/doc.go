// Package engineer is the support engineer's client of actas, behind
// `actas support`: sign-in at the support IdP with OIDC code + PKCE on a
// loopback redirect (RFC 8252), redemption of support codes by token
// exchange, DPoP-bound tokens refreshed as needed (RFC 9449), and the
// per-broker cache file that holds them.
//
// It talks to actas only over HTTP, as any client would; it shares no
// code with the server but the DPoP package of the rp module.
package engineer
