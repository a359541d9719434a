package configs

// Where problems are: a config file's problems carry the line and column
// of the field they name, so that an editor or a terminal can jump there.
// sigs.k8s.io/yaml, which decodes the file, keeps no positions (it goes
// through JSON), so the file is also parsed into go.yaml.in/yaml/v3's node
// tree, which has them, and each field path is looked up there.

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
)

// SyntaxError is a YAML syntax error. Nothing after it can be read, so it
// is the only problem reported for its file.
type SyntaxError struct {
	// Line is the 1-based line of the error; 0 if the parser did not say.
	Line int
	// Msg is the parser's description: "did not find expected key".
	Msg string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: YAML syntax error: %s", e.Line, e.Msg)
	}
	return "YAML syntax error: " + e.Msg
}

// FileError is every problem of one config file, each located in it. Its
// message has one line per problem, as compilers print them:
//
//	node.yaml:5:15: node.podCIDRs[0]: "10.244.0.0/33" is not a CIDR prefix (want e.g. 10.244.1.0/24)
//	node.yaml:9:3: peers[0].nmae: unknown field (did you mean "name"?)
//
// in the order of the file. errors.As reaches each *FieldError or
// *SyntaxError.
type FileError struct {
	// Path names the file as the user gave it ("<stdin>" for standard
	// input).
	Path string
	// Errs are *FieldError (with Line and Column) or one *SyntaxError.
	Errs []error
}

func (e *FileError) Error() string { return strings.Join(e.Lines(), "\n") }

// Unwrap returns Errs.
func (e *FileError) Unwrap() []error { return e.Errs }

// Lines returns the message's lines, one per problem.
func (e *FileError) Lines() []string {
	out := make([]string, 0, len(e.Errs))
	for _, err := range e.Errs {
		switch err := err.(type) {
		case *FieldError:
			out = append(out, fmt.Sprintf("%s:%d:%d: %s", e.Path, err.Line, err.Column, err))
		case *SyntaxError:
			if err.Line > 0 {
				out = append(out, fmt.Sprintf("%s:%d: YAML syntax error: %s", e.Path, err.Line, err.Msg))
			} else {
				out = append(out, fmt.Sprintf("%s: YAML syntax error: %s", e.Path, err.Msg))
			}
		default:
			out = append(out, fmt.Sprintf("%s: %s", e.Path, err))
		}
	}
	return out
}

// fileError returns err, from Parse, ParseTuning or Decode, as the
// *FileError of path, its problems in the order of the file.
func fileError(path string, err error) error {
	errs := unjoin(err)
	slices.SortStableFunc(errs, func(a, b error) int {
		la, ca := position(a)
		lb, cb := position(b)
		return cmp.Or(cmp.Compare(la, lb), cmp.Compare(ca, cb))
	})
	return &FileError{Path: path, Errs: errs}
}

func position(err error) (line, col int) {
	switch err := err.(type) {
	case *FieldError:
		return err.Line, err.Column
	case *SyntaxError:
		return err.Line, 0
	}
	return 0, 0
}

// unjoin returns the errors joined in err (errors.Join), or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return slices.Clone(j.Unwrap())
	}
	return []error{err}
}

// pos is a place in a file: 1-based line and column.
type pos struct{ line, col int }

// positions maps the field paths of a file, spelt as FieldError.Field
// spells them (peers[1].podCIDRs[0]), to where they are: a scalar's
// value, or the key of a mapping or list. "" is the document.
type positions struct {
	at   map[string]pos
	keys map[string]pos // the key of each mapping entry
}

// parseYAML parses data into positions and reports what only the text
// shows: a syntax error (then nothing else), and fields given twice.
func parseYAML(data []byte) (*positions, []error) {
	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil {
		return nil, []error{syntaxError(err)}
	}
	ps := &positions{at: map[string]pos{"": {1, 1}}, keys: map[string]pos{}}
	var errs []error
	if doc.Kind == yaml3.DocumentNode && len(doc.Content) > 0 {
		root := doc.Content[0]
		ps.at[""] = pos{root.Line, root.Column}
		walkYAML(root, "", ps, &errs)
	}
	return ps, errs
}

// walkYAML records the positions of n's fields under path. Aliases are
// not followed: their fields are located at the alias.
func walkYAML(n *yaml3.Node, path string, ps *positions, errs *[]error) {
	switch n.Kind {
	case yaml3.MappingNode:
		first := map[string]*yaml3.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := joinPath(path, k.Value)
			if f, dup := first[k.Value]; dup {
				*errs = append(*errs, &FieldError{Field: sub, Line: k.Line, Column: k.Column,
					Msg: fmt.Sprintf("given twice (first on line %d; want each field once)", f.Line)})
				continue
			}
			first[k.Value] = k
			ps.keys[sub] = pos{k.Line, k.Column}
			if v.Kind == yaml3.ScalarNode {
				ps.at[sub] = pos{v.Line, v.Column}
			} else {
				ps.at[sub] = pos{k.Line, k.Column}
			}
			walkYAML(v, sub, ps, errs)
		}
	case yaml3.SequenceNode:
		for i, e := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			ps.at[sub] = pos{e.Line, e.Column}
			walkYAML(e, sub, ps, errs)
		}
	}
}

// locate sets the position of each *FieldError in errs that has none:
// where its field is, or, for a field the file does not have (a missing
// one), where the nearest enclosing field is.
func (ps *positions) locate(errs []error) {
	for _, err := range errs {
		fe, ok := err.(*FieldError)
		if !ok || fe.Line != 0 {
			continue
		}
		if at, ok := ps.keys[fe.Field]; ok && fe.atKey {
			fe.Line, fe.Column = at.line, at.col
			continue
		}
		p := fe.Field
		for {
			if at, ok := ps.at[p]; ok {
				fe.Line, fe.Column = at.line, at.col
				break
			}
			if p == "" {
				fe.Line, fe.Column = 1, 1
				break
			}
			p = ParentPath(p)
		}
	}
}

// ParentPath strips the last step of a field path: peers[1].podCIDRs[0]
// → peers[1].podCIDRs → peers[1] → peers → "". Files of other schemas
// (vrouter demo's topology) locate their errors with it too.
func ParentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// yamlLine matches the position prefix of the YAML parsers' messages.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?(?:line (\d+): )?`)

// syntaxError turns a YAML parser's error into a *SyntaxError without the
// library's prefixes ("yaml: line 3: ...").
func syntaxError(err error) *SyntaxError {
	msg := strings.TrimSpace(err.Error())
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	se := &SyntaxError{}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		se.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	se.Msg = msg
	return se
}
