package eventlog

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every entry of the record table is consistent with its record: its type
// is its RecordType, unique, decodes, and names a declared stream.
func TestRecordKinds(t *testing.T) {
	streams := map[string]bool{}
	for _, c := range streamConfigs(StreamOptions{}) {
		streams[c.Name] = true
	}
	seen := map[string]bool{}
	for _, k := range RecordKinds() {
		if seen[k.Type] {
			t.Errorf("%s is in the table twice", k.Type)
		}
		seen[k.Type] = true
		if got := k.New().RecordType(); got != k.Type {
			t.Errorf("%s: New makes a %s record", k.Type, got)
		}
		if !streams[k.Stream] {
			t.Errorf("%s: stream %q is not declared", k.Type, k.Stream)
		}
		r, err := Decode(k.Type, []byte(`{}`))
		if err != nil || r.RecordType() != k.Type {
			t.Errorf("Decode(%s) = %v, %v", k.Type, r, err)
		}
		if k.Revokes {
			// Session caches drop the sessions of the record's user_id
			// (and, lacking one, every session they hold).
			if k.Stream != StreamAccounts {
				t.Errorf("%s revokes sessions but is on %s, which session caches do not read", k.Type, k.Stream)
			}
			b, _ := json.Marshal(k.New())
			var fields map[string]any
			if err := json.Unmarshal(b, &fields); err != nil {
				t.Fatal(err)
			}
			if _, ok := fields["user_id"]; !ok {
				t.Errorf("%s revokes sessions but has no user_id", k.Type)
			}
		}
		if _, err := Decode(k.Type, []byte(`[]`)); err == nil {
			t.Errorf("Decode(%s) of a JSON array succeeded", k.Type)
		}
	}
	if len(seen) < 30 {
		t.Fatalf("only %d record types in the table", len(seen))
	}
	if _, err := Decode("no.such.type", []byte(`{}`)); err == nil {
		t.Error("an unknown type decoded")
	}
	if !Revokes("no.such.type") {
		t.Error("an unknown type does not count as revoking sessions")
	}
}

// Every type of this package with a RecordType method is in the table, so
// that a record type cannot be added without deciding its stream and what
// it does to sessions (and so without the readers' tests seeing it).
func TestEveryRecordIsInTheTable(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || fd.Name.Name != "RecordType" || len(fd.Body.List) != 1 {
				continue
			}
			ret, ok := fd.Body.List[0].(*ast.ReturnStmt)
			if !ok || len(ret.Results) != 1 {
				continue
			}
			lit, ok := ret.Results[0].(*ast.BasicLit)
			if !ok {
				continue
			}
			found++
			typ := strings.Trim(lit.Value, `"`)
			if _, ok := KindOf(typ); !ok {
				t.Errorf("%s: record type %s is not in recordKinds", fset.Position(fd.Pos()), typ)
			}
		}
	}
	if found != len(recordKinds) {
		t.Errorf("found %d RecordType methods, the table has %d entries", found, len(recordKinds))
	}
}
