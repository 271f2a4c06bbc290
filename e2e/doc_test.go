package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/actas/actas/config"
	"github.com/actas/actas/policy"
)

// docBlock is a fenced block marked "sh runnable" in the README or docs/.
type docBlock struct {
	file string
	line int
	code string
}

func runnableBlocks(t *testing.T) []docBlock {
	files, _ := filepath.Glob("../docs/*.md")
	files = append([]string{"../README.md"}, files...)
	var out []docBlock
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		var cur *docBlock
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			switch {
			case cur == nil && strings.TrimSpace(line) == "```sh runnable":
				cur = &docBlock{file: f, line: n}
			case cur != nil && strings.TrimSpace(line) == "```":
				out = append(out, *cur)
				cur = nil
			case cur != nil:
				cur.code += line + "\n"
			}
		}
	}
	return out
}

// TestDocs runs every block marked "sh runnable" in README.md and docs/
// (issue 9): a newcomer with nothing but the repository follows them with
// the built binary on PATH, in an empty directory (examples/ linked in),
// and every one must succeed.
func TestDocs(t *testing.T) {
	blocks := runnableBlocks(t)
	if len(blocks) < 3 {
		t.Fatalf("found %d runnable blocks; the README's walkthrough is missing", len(blocks))
	}
	examples, _ := filepath.Abs("../examples")
	for _, b := range blocks {
		t.Run(filepath.Base(b.file)+":"+strconv.Itoa(b.line), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Symlink(examples, filepath.Join(dir, "examples")); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", b.code)
			cmd.Dir = dir
			cmd.Env = append(childEnv(), "PATH="+filepath.Dir(actasBin)+":"+os.Getenv("PATH"), "ACTAS_LISTEN="+freePort(t))
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so a left-over server dies with the group
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			out, err := cmd.CombinedOutput()
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			if err != nil {
				t.Fatalf("%s:%d failed: %v\n%s", b.file, b.line, err, out)
			}
			if strings.Contains(b.code, "/introspect") {
				if !strings.Contains(string(out), `"active":true`) || !strings.Contains(string(out), `{"active":false}`) {
					t.Fatalf("%s:%d: the walkthrough must show the token active, then inactive:\n%s", b.file, b.line, out)
				}
			}
		})
	}
}

// TestDocsConfigExample: the complete example of docs/config.md and the
// README's configuration are valid configurations.
func TestDocsConfigExample(t *testing.T) {
	for _, f := range []string{"../docs/config.md", "../README.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok := strings.Cut(string(b), "```yaml\nissuer:")
		if !ok {
			t.Fatalf("%s has no configuration example", f)
		}
		example, _, _ := strings.Cut("issuer:"+rest, "```")
		env := map[string]string{"ACTAS_PRODUCT_SECRET": "0123456789abcdef", "ACTAS_SECRET_KEY": pgSecret}
		if _, err := config.Parse(f, []byte(example), func(k string) string { return env[k] }); err != nil {
			t.Fatalf("the example in %s does not load: %v", f, err)
		}
	}
}

// TestDocsPolicyRules: every rules example of docs/policy.md compiles
// when it replaces the sample policy's rules.
func TestDocsPolicyRules(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base, _, _ := strings.Cut(string(sample), "\nrules:")
	n := 0
	for _, part := range strings.Split(string(doc), "```yaml\nrules:")[1:] {
		rules, _, _ := strings.Cut(part, "```")
		if _, err := policy.Parse("docs/policy.md", []byte(base+"\nrules:"+rules)); err != nil {
			t.Fatalf("a rules example of docs/policy.md does not load: %v", err)
		}
		n++
	}
	if n < 2 {
		t.Fatalf("found %d rules examples", n)
	}
}
