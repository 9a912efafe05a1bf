#pragma once
// pyopt::json — a small JSON value, reader and writer (RFC 8259), enough for best.json configs and
// checkpoint metadata. No dependencies.
//
//   pyopt::json::Value v = pyopt::json::parse(R"({"optimizer": "adamw", "hyperparameters": {"lr": 3e-4}})");
//   v["hyperparameters"]["lr"].as_number();   // 0.0003
//   pyopt::json::dump(v);                     // compact text; numbers round-trip exactly (%.17g)
//
// Reader: objects, arrays, strings (all escapes, \uXXXX with surrogate pairs, output UTF-8),
// numbers, true/false/null; also NaN, Infinity and -Infinity as Python's json module writes them.
// Errors throw pyopt::json::ParseError with the line and column. Object keys keep their order;
// a repeated key keeps its last value (as Python's json).
#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace pyopt {
namespace json {

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;  // insertion order

  Value() = default;  // null
  Value(std::nullptr_t) {}
  Value(bool b) : type_(Type::Bool), bool_(b) {}
  Value(double x) : type_(Type::Number), number_(x) {}
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Value(T x) : type_(Type::Number), number_(double(x)) {}  // any integer type (exact up to 2^53)
  Value(const char* s) : type_(Type::String), string_(s) {}
  Value(std::string s) : type_(Type::String), string_(std::move(s)) {}
  Value(Array a) : type_(Type::Array), array_(std::move(a)) {}
  Value(Object o) : type_(Type::Object), object_(std::move(o)) {}
  static Value object() { return Value(Object{}); }
  static Value array() { return Value(Array{}); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  // Typed access; std::invalid_argument ("expected a number, got a string") on the wrong type.
  bool as_bool() const;
  double as_number() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  Array& as_array();
  const Object& as_object() const;
  Object& as_object();

  // Objects: find() returns nullptr when absent; operator[] throws std::out_of_range naming the key.
  const Value* find(const std::string& key) const;
  const Value& operator[](const std::string& key) const;
  void set(const std::string& key, Value v);  // replaces or appends (this must be an object)
  // Arrays: operator[] throws std::out_of_range.
  const Value& operator[](std::size_t i) const;
  std::size_t size() const;  // elements of an array or object; 0 otherwise

  bool operator==(const Value& other) const;
  bool operator!=(const Value& other) const { return !(*this == other); }

 private:
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  Array array_;
  Object object_;
};

const char* type_name(Value::Type t);  // "null", "bool", "number", "string", "array", "object"

Value parse(const std::string& text);   // the whole text must be one value (whitespace around it)
Value parse_file(const std::string& path);  // std::runtime_error if the file cannot be read
// Compact JSON ("key": value, ", " separators as Python's json.dumps). Numbers: integers up to
// 2^53 without a fraction, others with 17 significant digits; NaN/Inf as NaN/Infinity/-Infinity.
// Non-ASCII text is written as \uXXXX escapes, so the output is plain ASCII.
std::string dump(const Value& v);

// Appends code point cp as UTF-8 (also used by the npy reader for numpy's UTF-32 strings).
void append_utf8(std::string& out, unsigned cp);

}  // namespace json
}  // namespace pyopt
