package config

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/xdplb/xdplb/control"
)

// The range tags that stand for a constant of another package say the same number.
func TestSchemaRangeTags(t *testing.T) {
	f, _ := reflect.TypeFor[yamlRealServer]().FieldByName("Weight")
	if _, hi := intRange(f.Type.Elem(), f.Tag); hi != control.MaxWeight {
		t.Errorf("real server weight range ends at %d, control.MaxWeight is %d", hi, control.MaxWeight)
	}
}

// Every key of the schema decodes: a field of a kind decode does not know would panic.
func TestSchemaKinds(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[yamlConfig](), reflect.TypeFor[yamlSizes](), reflect.TypeFor[yamlService](),
		reflect.TypeFor[yamlRealServer](), reflect.TypeFor[yamlSorry](), reflect.TypeFor[yamlCheck](), reflect.TypeFor[yamlMySQL](),
		reflect.TypeFor[yamlExec](), reflect.TypeFor[yamlVRRP]()} {
		for _, f := range fieldsOf(typ) {
			ft := typ.Field(f.index).Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			switch ft.Kind() {
			case reflect.String, reflect.Bool, reflect.Int, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Struct:
			default:
				t.Errorf("%s.%s: kind %s", typ.Name(), f.key, ft.Kind())
			}
			if r := f.tag.Get("range"); r != "" {
				lo, hi := intRange(ft, f.tag)
				if want := strconv.FormatInt(lo, 10) + ".." + strconv.FormatInt(hi, 10); r != want {
					t.Errorf("%s.%s: range %q read as %s", typ.Name(), f.key, r, want)
				}
			}
		}
	}
}
