# The Rack app the Unicorn and Puma tests serve: it names the worker that answered.
run lambda { |env|
  body = %({"pid": #{Process.pid}, "ppid": #{Process.ppid}}\n)
  [200, { "content-type" => "application/json", "content-length" => body.bytesize.to_s }, [body]]
}
