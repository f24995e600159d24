package idempg

import (
	"encoding/binary"
	"errors"

	idem "github.com/idemkit/idem/core"
)

// The header column holds the recorded header fields in a compact binary
// form: a version byte, the number of fields, then for each field its name
// and its value, each as a length and the bytes. Lengths and the count are
// unsigned varints in their shortest form. Names and values are arbitrary bytes.
const headerVersion = 1

// encodeHeader returns nil (stored as NULL) when there are no fields.
func encodeHeader(h []idem.HeaderField) []byte {
	if len(h) == 0 {
		return nil
	}
	size := 1 + binary.MaxVarintLen64
	for _, f := range h {
		size += 2*binary.MaxVarintLen64 + len(f.Name) + len(f.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, headerVersion)
	b = binary.AppendUvarint(b, uint64(len(h)))
	for _, f := range h {
		b = binary.AppendUvarint(b, uint64(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.AppendUvarint(b, uint64(len(f.Value)))
		b = append(b, f.Value...)
	}
	return b
}

var errBadHeader = errors.New("header column is not in the idempg encoding")

// decodeHeader reverses encodeHeader; NULL or empty means no fields.
func decodeHeader(b []byte) ([]idem.HeaderField, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != headerVersion {
		return nil, errBadHeader
	}
	b = b[1:]
	n, err := readUvarint(&b)
	// Every field takes at least two bytes, which bounds n before allocating.
	if err != nil || n > uint64(len(b))/2 {
		return nil, errBadHeader
	}
	h := make([]idem.HeaderField, n)
	for i := range h {
		name, err := readBytes(&b)
		if err != nil {
			return nil, err
		}
		value, err := readBytes(&b)
		if err != nil {
			return nil, err
		}
		h[i] = idem.HeaderField{Name: name, Value: value}
	}
	if len(b) != 0 {
		return nil, errBadHeader
	}
	return h, nil
}

func readUvarint(b *[]byte) (uint64, error) {
	v, n := binary.Uvarint(*b)
	// A last byte of zero after the first means a longer encoding than
	// needed: reject it, so that every value has one encoding.
	if n <= 0 || n > 1 && (*b)[n-1] == 0 {
		return 0, errBadHeader
	}
	*b = (*b)[n:]
	return v, nil
}

func readBytes(b *[]byte) (string, error) {
	n, err := readUvarint(b)
	if err != nil || n > uint64(len(*b)) {
		return "", errBadHeader
	}
	s := string((*b)[:n])
	*b = (*b)[n:]
	return s, nil
}
