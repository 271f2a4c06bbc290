package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed templates/layout.html templates/_grant.html
var layoutFS embed.FS

//go:embed assets
var assetFS embed.FS

// Assets serves the embedded stylesheet and scripts under /assets/.
func Assets() http.Handler {
	sub, _ := fs.Sub(assetFS, "assets")
	files := http.StripPrefix("/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// CSP is every page's Content-Security-Policy: this origin's own files
// only (no inline script or style), never framed.
const CSP = "default-src 'self'; frame-ancestors 'none'"

// Pages renders a surface's pages: each is the shared layout with one of
// the surface's templates, which defines "title" and "main" (and may
// define "nav" and "scripts").
type Pages struct {
	t map[string]*template.Template
}

// NewPages parses templates/name.html from fsys for each name, with the
// layout, the shared partials and the surface's own (templates/_*.html).
func NewPages(fsys fs.FS, names ...string) *Pages {
	p := &Pages{t: map[string]*template.Template{}}
	partials, _ := fs.Glob(fsys, "templates/_*.html")
	for _, name := range names {
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(layoutFS, "templates/layout.html", "templates/_grant.html"))
		if len(partials) > 0 {
			t = template.Must(t.ParseFS(fsys, partials...))
		}
		p.t[name] = template.Must(t.ParseFS(fsys, "templates/"+name+".html"))
	}
	return p
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("Mon 2 Jan 2006, 15:04 MST") },
	"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"in":   Relative,
	"join": func(l []string) string { return strings.Join(l, ", ") },
}

// Relative says how far t is from now, in words.
func Relative(t time.Time) string {
	d := time.Until(t).Round(time.Minute)
	past := d < 0
	if past {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	if past {
		return s + " ago"
	}
	return "in " + s
}

// Render writes a page with the headers every page carries: the CSP, no
// framing, no caching (pages show codes and grants), no referrer (a page
// URL may name a request).
func (p *Pages) Render(w http.ResponseWriter, status int, name string, view any) {
	var buf bytes.Buffer
	if err := p.t[name].Execute(&buf, view); err != nil {
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// ParseForm reads a page's form POST: form-encoded, at most 16 KiB.
func ParseForm(w http.ResponseWriter, r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return fmt.Errorf("content type %q", ct)
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	return r.ParseForm()
}

// Cookie is a __Host- cookie as every actas cookie is: Secure (browsers
// accept it from http://127.0.0.1 and localhost too), HttpOnly, host-only,
// Path=/, SameSite=Lax. A negative maxAge deletes it.
func Cookie(name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge / time.Second)
	}
	return c
}
