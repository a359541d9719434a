package configs

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// checkFields walks a generic decoding of the file (maps, slices and
// scalars as encoding/json produces them) against the schema type t and
// reports unknown fields and values of the wrong type with their paths.
// It removes what it reports from v (an unknown key; a value of the wrong
// type, from its map or, set to null, from its list), so that the rest
// still decodes and is validated. It reports whether v itself is of the
// right type: if not, the caller removes it.
//
// sigs.k8s.io/yaml's strict mode rejects unknown fields too, but it stops
// at the first, its message carries no path ("json: unknown field
// \"podCIDR\"") and, like encoding/json, it matches keys
// case-insensitively, so "podcidrs" would pass unnoticed. Keys here must
// match the schema exactly.
func checkFields(ck *checker, v any, t reflect.Type, path string) bool {
	if v == nil { // YAML null or an absent value: the zero value.
		return true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(format string, args ...any) bool {
		ck.addf(fieldOrTop(path), format, args...)
		ck.shadowed = append(ck.shadowed, path)
		return false
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return bad("%s is not a mapping (want one with the fields %s)", describe(v), strings.Join(jsonNames(t), ", "))
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			sub := joinPath(path, k)
			f, ok := fieldByJSONName(t, k)
			if !ok {
				name, hint := SuggestField(k, jsonNames(t))
				ck.keyf(sub, "unknown field (%s)", hint)
				if _, given := m[name]; name != "" && !given {
					ck.shadowed = append(ck.shadowed, joinPath(path, name))
				}
				delete(m, k)
				continue
			}
			if !checkFields(ck, m[k], f.Type, sub) {
				delete(m, k)
			}
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			return bad("%s is not a list (want a YAML sequence: [a, b] or one \"- \" line per item)", describe(v))
		}
		for i, e := range s {
			if !checkFields(ck, e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)) {
				s[i] = nil
			}
		}
	case reflect.String:
		switch v.(type) {
		case string, float64, bool: // sigs.k8s.io/yaml turns scalars into strings.
		default:
			return bad("%s is not a string", describe(v))
		}
	case reflect.Int:
		n, ok := v.(float64)
		if !ok || n != math.Trunc(n) || math.Abs(n) > math.MaxInt32 {
			return bad("%s is not an integer", describe(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return bad("%s is not a boolean (want true or false)", describe(v))
		}
	}
	return true
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func fieldOrTop(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}

// describe formats a generic YAML value for a message.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%v", v)
}

// jsonNames lists the field names of struct type t in declaration order.
func jsonNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := jsonName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	return names
}

func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return ""
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		return f.Name
	}
	return name
}

func fieldByJSONName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); jsonName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// SuggestField proposes the known field closest to an unknown key: its
// name ("" if none is close, within an edit distance of 2 ignoring case)
// and the hint for the message ("did you mean ...?", or the known fields).
// Other files of the router's (demo topologies) phrase their unknown
// fields with it, as config files do.
func SuggestField(key string, known []string) (name, hint string) {
	best, bestDist := "", 3 // suggest only within an edit distance of 2
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return k, fmt.Sprintf("did you mean %q?", k)
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return best, fmt.Sprintf("did you mean %q?", best)
	}
	return "", "want one of " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
