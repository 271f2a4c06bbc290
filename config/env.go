package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/actas/actas/internal/strictyaml"
	"github.com/actas/actas/internal/suggest"
)

// applyEnv overrides fields from ACTAS_<PATH> variables.
func (c *Config) applyEnv(getenv func(string) string) error {
	return applyEnvStruct(reflect.ValueOf(c).Elem(), "ACTAS", getenv)
}

func applyEnvStruct(v reflect.Value, prefix string, getenv func(string) string) error {
	return eachEnvField(v, prefix, func(env string, f reflect.StructField, fv reflect.Value) error {
		val := getenv(env)
		if val == "" {
			return nil
		}
		switch {
		case f.Type.Kind() == reflect.String:
			fv.SetString(val)
		case f.Type.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return fmt.Errorf("%s: want true or false, got %q", env, val)
			}
			fv.SetBool(b)
		default:
			// Durations and lists: YAML text, decoded as strictly as the file.
			holder := reflect.New(reflect.StructOf([]reflect.StructField{{
				Name: "V", Type: f.Type, Tag: `yaml:"v"`,
			}}))
			if _, err := strictyaml.Decode([]byte("v: "+indentFlow(val)), holder.Interface()); err != nil {
				return fmt.Errorf("%s: %v", env, err)
			}
			fv.Set(holder.Elem().Field(0))
		}
		return nil
	})
}

// eachEnvField calls fn for every key of the struct v with the name of
// its ACTAS_<PATH> variable, descending into sections.
func eachEnvField(v reflect.Value, prefix string, fn func(env string, f reflect.StructField, fv reflect.Value) error) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		env := prefix + "_" + strings.ToUpper(name)
		var err error
		if f.Type.Kind() == reflect.Struct {
			err = eachEnvField(v.Field(i), env, fn)
		} else {
			err = fn(env, f, v.Field(i))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// indentFlow makes a single- or multi-line YAML value safe to place after
// "v: ": multi-line block text goes on indented lines of its own.
func indentFlow(val string) string {
	if !strings.Contains(val, "\n") {
		return val
	}
	return "\n  " + strings.ReplaceAll(strings.TrimRight(val, "\n"), "\n", "\n  ")
}

// UnknownEnv returns a message for every ACTAS_ variable in environ that
// names no configuration key and no secret this configuration reads
// (SecretKeyEnv, and every *_env key's variable): a mistyped variable is
// an error, as a mistyped key in the file is.
func UnknownEnv(c *Config, environ []string) []string {
	// ACTAS_BROKER is the engineer CLI's (actas support --broker); an
	// operator's shell may well have it set.
	known := map[string]bool{SecretKeyEnv: true, "ACTAS_BROKER": true}
	eachEnvField(reflect.ValueOf(Config{}), "ACTAS", func(env string, _ reflect.StructField, _ reflect.Value) error {
		known[env] = true
		return nil
	})
	for _, v := range []string{c.SupportIDP.ClientSecretEnv, c.TicketHook.SecretEnv, c.Notifications.WebhookSecretEnv, c.Notifications.SMTP.PasswordEnv} {
		known[v] = true
	}
	for _, cl := range c.Clients {
		known[cl.SecretEnv] = true
	}
	for _, ci := range c.CustomerIDPs {
		known[ci.ClientSecretEnv] = true
	}
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "ACTAS_") || known[name] {
			continue
		}
		msg := fmt.Sprintf("environment variable %s is not a configuration key", name)
		if s := suggest.Closest(name, names); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		out = append(out, msg)
	}
	sort.Strings(out)
	return out
}
