package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's Chromium; browser tests skip only when it is
// not installed (.ci/run installs it, so CI always runs them).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("Chromium is not installed; .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("Chromium is not installed (apt-get install chromium)")
	return ""
}

// browser is one headless Chromium profile: its own cookies, as one
// person's browser. Options are those this closed network needs.
type browser struct {
	ctx context.Context
}

func newBrowser(t *testing.T, scripts bool) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("blink-settings", "scriptEnabled="+map[bool]string{true: "true", false: "false"}[scripts]),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return &browser{ctx: ctx}
}

// run runs actions with a deadline, failing the test with what the page
// showed when they fail.
func (b *browser) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage %s:\n%s", what, err, b.url(t), b.text(t))
	}
}

// text is the page's visible text.
func (b *browser) text(t *testing.T) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	return s
}

func (b *browser) url(t *testing.T) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Location())
	return s
}

// waitText waits until the page's text contains want.
func (b *browser) waitText(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(b.text(t), want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("page %s never showed %q; it shows:\n%s", b.url(t), want, b.text(t))
}

// byLabel is the XPath of the form control a visible label names, as a
// person finds it.
func byLabel(label string) chromedp.Search {
	return chromedp.Search(`//*[@id=//label[normalize-space()="` + label + `"]/@for]`)
}

// button is the XPath of a button by its visible text.
func button(text string) chromedp.Search {
	return chromedp.Search(`//button[normalize-space()="` + text + `"]`)
}

// fill sets the control labelled label to value, replacing what it held.
func fill(label, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(byLabel(label)),
		chromedp.SetValue(byLabel(label), value),
	)
}

// click presses the button with this text.
func click(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(button(text)),
		chromedp.Click(button(text)),
	)
}

// shot saves a screenshot of the page as name.png under
// $ACTAS_TEST_SCREENSHOTS, when set: how docs/ gets its pictures.
func (b *browser) shot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("ACTAS_TEST_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// loaded reports whether the current document has finished loading: the
// location changes when a navigation commits, before the new page's body
// is parsed.
func (b *browser) loaded() bool {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.readyState`))
	return err == nil && state == "complete"
}

// waitURL waits until the page's address contains want and that page has
// loaded.
func (b *browser) waitURL(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(b.url(t), want) && b.loaded() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the browser never reached %q; it is at %s", want, b.url(t))
}
