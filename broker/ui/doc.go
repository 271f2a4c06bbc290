// Package ui is the customer's self-service page under /ui/: sign-in at
// the customer's own IdP (OIDC code flow with PKCE; sessions are storage
// rows), the support-access setting, "Give support access" with the code
// shown once, the grant list with Terminate, the tenant's activity, the
// notification settings, and the live feed of events on the user's grants
// (Server-Sent Events).
//
// Pages are server-rendered through the web package's layout; every form
// works without JavaScript, which only adds the copy button and the live
// feed. Every rule is the core's, exactly as for the JSON API: the page
// parses a form, calls the core, and renders.
package ui
