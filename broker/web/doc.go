// Package web is what actas's HTML surfaces share: the layout, the
// stylesheet and scripts (embedded: nothing from a CDN), the headers every
// page carries (a CSP with no inline script or style, no framing, no
// caching), form parsing, and the template helpers for dates. It knows no
// route and no rule; the authorize and ui packages render through it.
package web
