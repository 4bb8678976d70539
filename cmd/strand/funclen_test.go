package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// maxFuncLines is the longest a function of the module's non-test code may
// be: beyond it a function runs several phases a reader has to hold in mind
// at once, and each phase wants a name.
const maxFuncLines = 150

// longFuncAllowed are the functions allowed to be longer, by file (from
// the module root) and name. Only route tables, which are lists, belong
// here.
var longFuncAllowed = map[string]string{
	// The route table: one line per route.
	"api/routes.go routes": "route table",
}

func TestFunctionLength(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			lines := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			key := filepath.ToSlash(rel) + " " + fd.Name.Name
			if lines <= maxFuncLines {
				continue
			}
			if _, ok := longFuncAllowed[key]; ok {
				seen[key] = true
				continue
			}
			t.Errorf("%s: %s is %d lines, more than %d: split it", fset.Position(fd.Pos()), fd.Name.Name, lines, maxFuncLines)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// An entry that no longer matches a long function (renamed, or split)
	// must leave the list, or it would excuse whatever comes next under
	// that name.
	for key := range longFuncAllowed {
		if !seen[key] {
			t.Errorf("%s is allowed to be long but is not (or no longer exists): remove it from longFuncAllowed", key)
		}
	}
}
