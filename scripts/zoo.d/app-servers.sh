# shellcheck shell=bash
# Application servers, on 127.0.21.N: Java servlet containers (Tomcat, Jetty), Python's WSGI
# and ASGI servers (gunicorn, uvicorn, Waitress, Hypercorn), Node's http module, PHP's
# built-in server and Icecast. All of them speak HTTP; what names each is in its answer to a
# plain `GET /` (a header or its error page).
# Sourced by scripts/zoo.sh (set -euo pipefail, bash).

ALL+=(tomcat10 jetty9 gunicorn uvicorn node icecast2 waitress hypercorn php)
PACKAGES+=(tomcat10 jetty9 python3-gunicorn python3-uvicorn nodejs icecast2 python3-waitress
  python3-hypercorn php-cli)

up_tomcat10() {
  local a=127.0.21.1 b="$DIR/tomcat10" p v
  v=$(upstream tomcat10)
  # Tomcat sends no Server header; its error page (ErrorReportValve) ends in
  # "<h3>Apache Tomcat/10.1.60 (Debian)</h3>". No webapps are deployed, so GET / is a 404
  # page: what any path outside the applications of a server gets.
  for p in 8080 28080; do entry tomcat10 $a $p tcp http "Apache Tomcat" "$v" -; done
  # AJP/1.3 connectors (for a front web server's mod_proxy_ajp): an AJP forward request for
  # GET / gets the same error page, in AJP packets. One requires a secret (Tomcat's default
  # since 9.0.31: the request without it gets a 403 page), one does not (secretRequired
  # false, as set where the connector listens on loopback only): both pages tell the version.
  for p in 8009 28009; do entry tomcat10 $a $p tcp ajp13 "Apache Tomcat" "$v" -; done
  mkdir -p "$b/conf" "$b/logs" "$b/temp" "$b/work" "$b/webapps"
  cp /usr/share/tomcat10/etc/web.xml /usr/share/tomcat10/etc/catalina.properties \
    /usr/share/tomcat10/etc/logging.properties "$b/conf/"
  # No shutdown port (-1): the zoo stops it with SIGTERM.
  cat >"$b/conf/server.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector address="$a" port="8080" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Connector address="$a" port="28080" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Connector address="$a" port="8009" protocol="AJP/1.3" secretRequired="false"/>
    <Connector address="$a" port="28009" protocol="AJP/1.3" secret="zoo-never-used"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
EOF
  chown -R tomcat:tomcat "$b"
  # catalina.sh run: the JVM in the foreground (exec), as Debian's tomcat user.
  start tomcat10 setpriv --reuid=tomcat --regid=tomcat --init-groups \
    env CATALINA_HOME=/usr/share/tomcat10 CATALINA_BASE="$b" CATALINA_TMPDIR="$b/temp" \
    CATALINA_OUT=/dev/stdout JAVA_OPTS="-Djava.net.preferIPv4Stack=true -Xms32m -Xmx128m -XX:TieredStopAtLevel=1 -Xshare:auto" \
    /usr/share/tomcat10/bin/catalina.sh run
}

up_jetty9() {
  local a=127.0.21.2 b="$DIR/jetty9" p v
  v=$(upstream jetty9)
  # Every answer carries "Server: Jetty(9.4.57.v20241219)"; its error pages end in
  # "Powered by Jetty:// 9.4.57.v20241219". No webapps: GET / is Jetty's 404 page.
  for p in 8080 28081; do entry jetty9 $a $p tcp http Jetty "$v" -; done
  mkdir -p "$b/etc" "$b/logs" "$b/webapps" "$b/tmp"
  # The http module's connector on 8080, and a second connector of our own on 28081.
  cat >"$b/start.ini" <<EOF
--module=http
jetty.http.host=$a
jetty.http.port=8080
etc/zoo-second-connector.xml
EOF
  cat >"$b/etc/zoo-second-connector.xml" <<EOF
<?xml version="1.0"?>
<!DOCTYPE Configure PUBLIC "-//Jetty//Configure//EN" "http://www.eclipse.org/jetty/configure_9_3.dtd">
<Configure id="Server" class="org.eclipse.jetty.server.Server">
  <Call name="addConnector">
    <Arg>
      <New class="org.eclipse.jetty.server.ServerConnector">
        <Arg name="server"><Ref refid="Server"/></Arg>
        <Arg name="factories">
          <Array type="org.eclipse.jetty.server.ConnectionFactory">
            <Item>
              <New class="org.eclipse.jetty.server.HttpConnectionFactory">
                <Arg name="config"><Ref refid="httpConfig"/></Arg>
              </New>
            </Item>
          </Array>
        </Arg>
        <Set name="host">$a</Set>
        <Set name="port">28081</Set>
      </New>
    </Arg>
  </Call>
</Configure>
EOF
  chown -R jetty:jetty "$b"
  start jetty9 setpriv --reuid=jetty --regid=jetty --init-groups \
    java -Djava.net.preferIPv4Stack=true -Xms32m -Xmx128m -XX:TieredStopAtLevel=1 -Djava.io.tmpdir="$b/tmp" \
    -jar /usr/share/jetty9/start.jar jetty.home=/usr/share/jetty9 jetty.base="$b"
}

up_gunicorn() {
  local a=127.0.21.3 d="$DIR/gunicorn" p
  # "Server: gunicorn": the name only (gunicorn 20 dropped the version from the header),
  # so the truth version is `-`.
  for p in 8000 28000; do entry gunicorn $a $p tcp http gunicorn - -; done
  mkdir -p "$d"
  printf '%s\n' 'def app(environ, start_response):' \
    "    start_response('200 OK', [('Content-Type', 'text/plain')])" \
    "    return [b'hi\\n']" >"$d/zooapp.py"
  chmod -R a+rX "$d"
  # One master and one worker, both binds; the workers run as nobody.
  start gunicorn /usr/bin/python3 -m gunicorn --chdir "$d" -b "$a:8000" -b "$a:28000" \
    -w 1 -u nobody -g nogroup --worker-tmp-dir "$d" zooapp:app
}

up_uvicorn() {
  local a=127.0.21.4 d="$DIR/uvicorn" p
  # "server: uvicorn" (lower case, from h11): the name only, so the truth version is `-`.
  mkdir -p "$d"
  printf '%s\n' 'async def app(scope, receive, send):' \
    "    assert scope['type'] == 'http'" \
    "    await send({'type': 'http.response.start', 'status': 200," \
    "                'headers': [(b'content-type', b'text/plain')]})" \
    "    await send({'type': 'http.response.body', 'body': b'hi\\n'})" >"$d/zooapp.py"
  # A server per port: uvicorn binds one.
  for p in 8000 28001; do
    entry uvicorn $a $p tcp http uvicorn - -
    start uvicorn /usr/bin/python3 -m uvicorn --app-dir "$d" --host $a --port $p \
      --no-access-log zooapp:app
  done
}

up_node() {
  local a=127.0.21.5 d="$DIR/node" p
  # Node's http module sends no Server header and no page of its own: nothing on the wire
  # names Node, so the port is `http` with no product claimed (`-`) and no version.
  for p in 3000 23000; do entry node $a $p tcp http - - -; done
  mkdir -p "$d"
  cat >"$d/app.js" <<EOF
const http = require('http');
for (const port of [3000, 23000]) {
  http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('hi\n');
  }).listen(port, '$a');
}
EOF
  start node /usr/bin/node "$d/app.js"
}

up_icecast2() {
  local a=127.0.21.6 d="$DIR/icecast2" p v
  v=$(upstream icecast2)
  # Every answer carries "Server: Icecast 2.4.4"; GET / is its status page ("<title>Icecast
  # Streaming Media Server</title>"), as with Debian's configuration.
  for p in 8000 28002; do entry icecast2 $a $p tcp http Icecast "$v" -; done
  mkdir -p "$d/log"
  cat >"$d/icecast.xml" <<EOF
<icecast>
  <location>zoo</location>
  <admin>zoo@zoo.test</admin>
  <hostname>zoo.test</hostname>
  <limits><clients>20</clients><sources>2</sources></limits>
  <authentication>
    <source-password>zoo-never-used</source-password>
    <relay-password>zoo-never-used</relay-password>
    <admin-user>admin</admin-user>
    <admin-password>zoo-never-used</admin-password>
  </authentication>
  <listen-socket><port>8000</port><bind-address>$a</bind-address></listen-socket>
  <listen-socket><port>28002</port><bind-address>$a</bind-address></listen-socket>
  <paths>
    <basedir>/usr/share/icecast2</basedir>
    <logdir>$d/log</logdir>
    <webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot>
    <pidfile>$d/icecast.pid</pidfile>
    <!-- As Debian's icecast.xml: / is the status page. -->
    <alias source="/" destination="/status.xsl"/>
  </paths>
  <logging>
    <accesslog>-</accesslog>
    <errorlog>-</errorlog>
    <loglevel>2</loglevel>
  </logging>
  <security><chroot>0</chroot></security>
</icecast>
EOF
  chown -R icecast2:icecast "$d"
  # Icecast will not run as root: Debian's icecast2 user.
  start icecast2 setpriv --reuid=icecast2 --regid=icecast --init-groups \
    /usr/bin/icecast2 -c "$d/icecast.xml"
}

up_waitress() {
  local a=127.0.21.7 d="$DIR/waitress" p
  # "Server: waitress" (its `ident` setting): the name only, so the truth version is `-`.
  for p in 8080 28082; do entry waitress $a $p tcp http Waitress - -; done
  mkdir -p "$d"
  printf '%s\n' 'def app(environ, start_response):' \
    "    start_response('200 OK', [('Content-Type', 'text/plain')])" \
    "    return [b'hi\\n']" >"$d/zooapp.py"
  # One server on both ports (--listen may be given more than once).
  start waitress env PYTHONPATH="$d" /usr/bin/python3 -m waitress --listen=$a:8080 \
    --listen=$a:28082 zooapp:app
}

up_hypercorn() {
  local a=127.0.21.8 d="$DIR/hypercorn" p
  # "server: hypercorn-h11" (the protocol it serves, never its version): the truth version
  # is `-`.
  for p in 8000 28003; do entry hypercorn $a $p tcp http Hypercorn - -; done
  mkdir -p "$d"
  printf '%s\n' 'async def app(scope, receive, send):' \
    "    if scope['type'] != 'http':" \
    "        return" \
    "    await send({'type': 'http.response.start', 'status': 200," \
    "                'headers': [(b'content-type', b'text/plain')]})" \
    "    await send({'type': 'http.response.body', 'body': b'hi\\n'})" >"$d/zooapp.py"
  # One server on both ports (-b may be given more than once).
  start hypercorn env PYTHONPATH="$d" /usr/bin/python3 -m hypercorn -b $a:8000 -b $a:28003 \
    zooapp:app
}

up_php() {
  local a=127.0.21.9 d="$DIR/php" p v
  # The truth: the package of the PHP that /usr/bin/php is (php8.2-cli on bookworm).
  v=$(upstream "$(dpkg-query -S "$(readlink -f /usr/bin/php)" | cut -d: -f1)")
  # PHP's built-in web server (php -S): "X-Powered-By: PHP/8.2.36" on every answer a PHP
  # script makes, and it echoes the request's Host header back. It listens on one port:
  # a server per port, as nobody, with Debian's php.ini (expose_php = On).
  mkdir -p "$d/www"
  printf '%s\n' '<?php echo "hi\n";' >"$d/www/index.php"
  chmod -R a+rX "$d"
  for p in 8000 28004; do
    entry php $a $p tcp http PHP "$v" -
    start php setpriv --reuid=nobody --regid=nogroup --clear-groups \
      /usr/bin/php -S $a:$p -t "$d/www"
  done
}
