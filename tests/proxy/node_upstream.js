// An upstream in another language for the proxy tests: Node's own http module.
// Run as `node tests/proxy/node_upstream.js PORT`.
//
//   /node/bytes?size=N  N bytes in which every byte value appears, fresh for 60 s
//   /node/chunked       a chunked answer written in three parts, fresh for 60 s
//   /node/cookies       two Set-Cookie lines and a Vary, fresh for 60 s
//   /node/echo          the request's method, path and header fields as JSON, never stored
'use strict'
const http = require('http')

function pattern (size) {
  const body = Buffer.alloc(size)
  for (let i = 0; i < size; i++) body[i] = i % 256
  return body
}

const server = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://upstream')
  if (url.pathname === '/node/bytes') {
    const body = pattern(parseInt(url.searchParams.get('size') || '1000'))
    response.writeHead(200, { 'Cache-Control': 'max-age=60', 'Content-Type': 'application/octet-stream', 'Content-Length': body.length })
    response.end(body)
  } else if (url.pathname === '/node/chunked') {
    response.writeHead(200, { 'Cache-Control': 'max-age=60', 'Content-Type': 'text/plain; charset=utf-8' })
    response.write('first part, ')
    setTimeout(() => { response.write('second part, '); response.end('last part\n') }, 50)
  } else if (url.pathname === '/node/cookies') {
    response.setHeader('Cache-Control', 'max-age=60')
    response.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
    response.setHeader('Vary', 'Accept-Language')
    response.setHeader('X-Empty', '')
    response.end('cookies\n')
  } else if (url.pathname === '/node/echo') {
    const body = JSON.stringify({ method: request.method, url: request.url, headers: request.rawHeaders })
    response.writeHead(200, { 'Cache-Control': 'no-store', 'Content-Type': 'application/json' })
    response.end(body)
  } else {
    response.writeHead(404)
    response.end()
  }
})
server.listen(parseInt(process.argv[2]), '127.0.0.1', () => console.log('listening'))
