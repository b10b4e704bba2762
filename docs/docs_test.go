// Package docs holds the project's documentation; its test keeps the code
// samples in the Markdown files (here and the README) true to the compiled
// Example functions they are copied from.
package docs

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A Go sample must be introduced by a marker naming the Example it is
// copied from:
//
//	<!-- from: idem/example_test.go ExampleRunInTx -->
//	```go
//	...lines copied from that function...
//	```
//
// Its lines (blank lines and indentation aside) must appear, in order and
// contiguous, in the function's source. Shell samples are commands and are
// not checked here.
var marker = regexp.MustCompile(`^<!-- from: (\S+) (\w+) -->$`)

type sample struct {
	file, from, fn string
	line           int
	code           []string
}

func samples(t *testing.T, md string) []sample {
	f, err := os.Open(md)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sample
	var pending *sample
	var cur *sample
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.code = append(cur.code, line)
		case marker.MatchString(line):
			m := marker.FindStringSubmatch(line)
			pending = &sample{file: md, from: m[1], fn: m[2], line: n}
		case strings.HasPrefix(line, "```go"):
			if pending == nil {
				t.Errorf("%s:%d: a Go sample without a <!-- from: file Example --> marker", md, n)
				pending = &sample{file: md, line: n}
			}
			cur, pending = pending, nil
		case strings.HasPrefix(line, "```"):
			pending = nil
		}
	}
	return out
}

func functionLines(t *testing.T, file, fn string) []string {
	fset := token.NewFileSet()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == fn {
			body := string(src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset])
			return strings.Split(body, "\n")
		}
	}
	t.Fatalf("%s has no function %s", file, fn)
	return nil
}

func normalise(lines []string) []string {
	var out []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func contiguous(haystack, needle []string) bool {
	for i := 0; i+len(needle) <= len(haystack); i++ {
		match := true
		for j := range needle {
			if haystack[i+j] != needle[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func TestSamplesAreCopiedFromExamples(t *testing.T) {
	mds, _ := filepath.Glob("*.md")
	mds = append(mds, "../README.md")
	checked := 0
	for _, md := range mds {
		for _, s := range samples(t, md) {
			if s.fn == "" {
				continue // reported above
			}
			want := normalise(s.code)
			have := normalise(functionLines(t, filepath.Join("..", s.from), s.fn))
			if len(want) == 0 || !contiguous(have, want) {
				t.Errorf("%s:%d: the sample is not a contiguous excerpt of %s in %s; copy it again", s.file, s.line, s.fn, s.from)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no samples found")
	}
	fmt.Println("checked", checked, "samples")
}
