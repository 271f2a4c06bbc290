// Package strictyaml decodes YAML documents into Go structs while refusing
// what a hand-edited security file must not contain: unknown keys,
// duplicate keys, anchors and aliases. Every problem carries its line and
// column so that callers can report file:line:col.
//
// It owns decoding only; meaning (ranges, references between keys) belongs
// to the packages that define the structs.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one defect in a document, with its position.
type Problem struct {
	Line, Column int
	Msg          string
	fatal        bool // the document must not be decoded
}

// Problems is every defect found in a document, in document order.
type Problems []Problem

func (p Problems) Error() string {
	var b strings.Builder
	for i, e := range p {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%d:%d: %s", e.Line, e.Column, e.Msg)
	}
	return b.String()
}

// Decode parses data into out (a pointer to a struct) and returns the root
// node for callers that need positions of their own. Unknown keys, duplicate
// keys, aliases, anchors and multiple documents are errors; all of them are
// reported at once as Problems.
func Decode(data []byte, out any) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{Line: 1, Column: 1, Msg: "document is empty"}}
		}
		return nil, syntaxProblem(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Problems{{Line: extra.Line, Column: extra.Column, Msg: "only one YAML document is allowed"}}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var probs Problems
	check(doc, reflect.TypeOf(out).Elem(), &probs)
	for _, p := range probs {
		if p.fatal {
			return nil, probs // anchors, aliases, duplicates: do not decode
		}
	}
	// Unknown keys are ignored by the decode, so every type problem is
	// found in the same pass: the caller gets the document (decoded as far
	// as it goes) and every problem, in document order.
	if err := doc.Decode(out); err != nil {
		probs = append(probs, typeProblems(err, doc)...)
	}
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool {
			return probs[i].Line < probs[j].Line || probs[i].Line == probs[j].Line && probs[i].Column < probs[j].Column
		})
		return doc, probs
	}
	return doc, nil
}

// syntaxProblem turns a yaml.v3 parse error ("yaml: line 3: ...") into a
// positioned Problem.
func syntaxProblem(err error) Problems {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return Problems{{Line: line, Column: 0, Msg: "invalid YAML: " + msg}}
}

// typeProblems converts yaml.v3 type errors ("line 4: cannot unmarshal
// !!str `x` into int") into Problems.
func typeProblems(err error, doc *yaml.Node) Problems {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var probs Problems
	for _, e := range msgs {
		line, col := doc.Line, 0
		msg := e
		if _, scanErr := fmt.Sscanf(e, "line %d column %d:", &line, &col); scanErr == nil {
			msg = strings.TrimSpace(e[strings.Index(e, ":")+1:])
		} else if _, scanErr := fmt.Sscanf(e, "line %d:", &line); scanErr == nil {
			msg = strings.TrimSpace(e[strings.Index(e, ":")+1:])
		}
		msg = goTypeRE.ReplaceAllStringFunc(msg, yamlKind)
		msg = strings.ReplaceAll(msg, "!!str", "string")
		msg = strings.ReplaceAll(msg, "!!int", "integer")
		msg = strings.ReplaceAll(msg, "!!map", "mapping")
		msg = strings.ReplaceAll(msg, "!!seq", "list")
		msg = strings.ReplaceAll(msg, "!!bool", "boolean")
		probs = append(probs, Problem{Line: line, Column: col, Msg: msg})
	}
	return probs
}

var goTypeRE = regexp.MustCompile(`into \S+$`)

// yamlKind rephrases "into []pkg.type" in the words of a YAML author.
func yamlKind(into string) string {
	t := strings.TrimPrefix(into, "into ")
	switch {
	case strings.HasPrefix(t, "[]"):
		return "where a list is expected"
	case strings.HasPrefix(t, "map["), strings.Contains(t, "."):
		return "where a mapping is expected"
	case t == "bool":
		return "where true or false is expected"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), strings.HasPrefix(t, "float"):
		return "where a number is expected"
	case t == "string":
		return "where a string is expected"
	}
	return "here"
}

// check walks node against t, recording unknown keys, duplicate keys and
// aliases. It does not check scalar types: yaml.v3 does that with positions.
func check(node *yaml.Node, t reflect.Type, probs *Problems) {
	if node.Anchor != "" {
		*probs = append(*probs, Problem{node.Line, node.Column, fmt.Sprintf("anchors are not allowed (&%s)", node.Anchor), true})
	}
	if node.Kind == yaml.AliasNode {
		*probs = append(*probs, Problem{node.Line, node.Column, "aliases are not allowed", true})
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(yaml.Node{}) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			return // yaml.v3 reports the type mismatch
		}
		fields := yamlFields(t)
		eachPair(node, probs, func(k, v *yaml.Node) {
			ft, ok := fields[k.Value]
			if !ok {
				*probs = append(*probs, Problem{k.Line, k.Column, fmt.Sprintf("unknown key %q (known: %s)", k.Value, knownKeys(fields)), false})
				return
			}
			check(v, ft, probs)
		})
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			return
		}
		eachPair(node, probs, func(_, v *yaml.Node) { check(v, t.Elem(), probs) })
	case reflect.Slice, reflect.Array:
		if node.Kind != yaml.SequenceNode {
			return
		}
		for _, c := range node.Content {
			check(c, t.Elem(), probs)
		}
	}
}

// eachPair calls fn for each key and value of a mapping, reporting
// repeated keys instead.
func eachPair(node *yaml.Node, probs *Problems, fn func(k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		if first, dup := seen[k.Value]; dup {
			*probs = append(*probs, Problem{k.Line, k.Column, fmt.Sprintf("duplicate key %q (first at line %d)", k.Value, first), true})
			continue
		}
		seen[k.Value] = k.Line
		fn(k, v)
	}
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	return fields
}

func knownKeys(fields map[string]reflect.Type) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// TooLargeError is a file over the size limit of ReadFile.
type TooLargeError struct {
	Path        string
	Size, Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: file is %d bytes; the limit is %d", e.Path, e.Size, e.Limit)
}

// ReadFile reads a file of at most limit bytes, refusing a larger one
// before reading it (*TooLargeError).
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, &TooLargeError{Path: path, Size: st.Size(), Limit: limit}
	}
	return io.ReadAll(io.LimitReader(f, limit+1))
}
