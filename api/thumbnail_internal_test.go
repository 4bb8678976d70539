package api

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// The nearest size of the default set answers every request: the
// smallest of the method that covers it, else the smallest of the other
// method that does, else the largest of the method.
func TestThumbnailPick(t *testing.T) {
	for _, tc := range []struct {
		w, h   int
		method string
		want   ThumbnailSize
	}{
		{1, 1, "crop", ThumbnailSize{32, 32, "crop"}},
		{32, 32, "crop", ThumbnailSize{32, 32, "crop"}},
		{33, 20, "crop", ThumbnailSize{96, 96, "crop"}},
		{100, 100, "crop", ThumbnailSize{320, 240, "scale"}},
		{700, 500, "crop", ThumbnailSize{800, 600, "scale"}},
		{1000, 1000, "crop", ThumbnailSize{96, 96, "crop"}},
		{32, 32, "scale", ThumbnailSize{320, 240, "scale"}},
		{321, 240, "scale", ThumbnailSize{640, 480, "scale"}},
		{640, 480, "scale", ThumbnailSize{640, 480, "scale"}},
		{981, 735, "scale", ThumbnailSize{800, 600, "scale"}},
	} {
		if got := pickThumbnail(DefaultThumbnailSizes, tc.w, tc.h, tc.method); got != tc.want {
			t.Errorf("%dx%d %s: %v, want %v", tc.w, tc.h, tc.method, got, tc.want)
		}
	}
	only := []ThumbnailSize{{64, 64, "crop"}}
	if got := pickThumbnail(only, 500, 500, "scale"); got != only[0] {
		t.Errorf("a set of one crop, asked to scale: %v", got)
	}
	if _, err := ParseThumbnailSizes("32x32:crop, 800x600:scale"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "32x32", "32:crop", "0x5:crop", "32x32:stretch", "2000x10:scale"} {
		if _, err := ParseThumbnailSizes(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// decodeCost is what image.Decode allocates, from the header alone: for
// JPEG from the frame header's sampling (4:2:0 here), for PNG from the
// colour model, doubled for interlacing.
func TestThumbnailDecodeCost(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 1000, 800))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil { // 4:2:0, baseline
		t.Fatal(err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// Luma in 16x16 MCUs (1008 x 800), two chroma planes at a quarter.
	if got, want := decodeCost(cfg, format, buf.Bytes()), int64(1008*800+2*504*400); got != want {
		t.Errorf("jpeg: %d, want %d", got, want)
	}
	// Progressive coding adds 256 bytes of coefficients per block.
	prog := append([]byte(nil), buf.Bytes()...)
	for i := 2; i+1 < len(prog); i++ {
		if prog[i] == 0xFF && prog[i+1] == 0xC0 {
			prog[i+1] = 0xC2
			break
		}
	}
	if got, want := decodeCost(cfg, format, prog), int64(1008*800+2*504*400)*5; got != want {
		t.Errorf("progressive jpeg: %d, want %d", got, want)
	}
	if got := decodeCost(cfg, format, buf.Bytes()[:100]); got != 1000*800*23 {
		t.Errorf("jpeg without a frame header: %d", got)
	}

	g := image.NewGray16(image.Rect(0, 0, 300, 200))
	g.Set(1, 1, color.Gray16{Y: 1000})
	buf.Reset()
	if err := png.Encode(&buf, g); err != nil {
		t.Fatal(err)
	}
	cfg, format, _ = image.DecodeConfig(bytes.NewReader(buf.Bytes()))
	if got := decodeCost(cfg, format, buf.Bytes()); got != 300*200*2 {
		t.Errorf("16-bit grey png: %d", got)
	}
	il := append([]byte(nil), buf.Bytes()...)
	il[28] = 1 // interlaced (the IHDR checksum is not checked here)
	if got := decodeCost(cfg, format, il); got != 300*200*2*2 {
		t.Errorf("interlaced png: %d", got)
	}
}

// Headers image/jpeg accepts but whose markers carry odd lengths never
// panic the cost walk: markers without a length are stepped over, a
// segment length below 2 gives the worst case.
func TestJPEGCostOddMarkers(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	real := buf.Bytes()
	for name, head := range map[string][]byte{
		"RST then SOF of length 0": {0xFF, 0xD8, 0xFF, 0xD0, 0xFF, 0xC0, 0x00, 0x00, 0x00, 0x10},
		"SOF of length 1":          {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x01, 0x08, 0x00},
		"APP of length 0":          {0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x00},
	} {
		if _, ok := jpegCost(head); ok {
			t.Errorf("%s: a cost from a broken header", name)
		}
	}
	// An RST marker before the real segments is stepped over, as the
	// decoder does, and the frame header still found.
	withRST := append([]byte{0xFF, 0xD8, 0xFF, 0xD0}, real[2:]...)
	if _, _, err := image.DecodeConfig(bytes.NewReader(withRST)); err != nil {
		t.Fatalf("image/jpeg refuses a leading RST marker: %v", err)
	}
	if _, ok := jpegCost(withRST); !ok {
		t.Error("the frame header after an RST marker was not found")
	}
}
