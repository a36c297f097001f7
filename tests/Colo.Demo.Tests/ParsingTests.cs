using System.Text;

namespace Colo.Demo.Tests;

public class ParsingTests
{
    [Fact]
    public void BenchmarkCsvRedis7()
    {
        const string csv = """
            "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
            "SET","60000.00","0.091","0.024","0.079","0.159","0.199","0.415"
            "GET","90000.00","0.060","0.016","0.063","0.087","0.119","0.319"
            "INCR","90000.00","0.065","0.032","0.063","0.087","0.127","0.455"
            """;
        RedisBenchmarkResult r = ClientWorkload.ParseBenchmarkCsv(csv, "set,get,incr");
        Assert.Equal(80000, r.RequestsPerS, 6);
        Assert.Equal(0, r.Errors);
        Assert.True(r.Ran);
    }

    [Fact]
    public void BenchmarkCsvMissingTestsAreErrors()
    {
        RedisBenchmarkResult r = ClientWorkload.ParseBenchmarkCsv("\"SET\",\"100.5\"\r\n", "set,get,incr");
        Assert.Equal(100.5, r.RequestsPerS);
        Assert.Equal(2, r.Errors);
        Assert.Equal(3, ClientWorkload.ParseBenchmarkCsv("", "set,get,incr").Errors);
        Assert.Equal(0, ClientWorkload.ParseBenchmarkCsv("", "set,get,incr").RequestsPerS);
    }

    [Fact]
    public void RespInteger()
    {
        Assert.True(ClientWorkload.TryParseRespInteger(":42", out long v));
        Assert.Equal(42, v);
        Assert.True(ClientWorkload.TryParseRespInteger(":-3", out v));
        Assert.Equal(-3, v);
        Assert.False(ClientWorkload.TryParseRespInteger("-ERR wrong type", out _));
        Assert.False(ClientWorkload.TryParseRespInteger("+OK", out _));
        Assert.False(ClientWorkload.TryParseRespInteger(":", out _));
        Assert.False(ClientWorkload.TryParseRespInteger(":12x", out _));
        Assert.Equal("*2\r\n$4\r\nINCR\r\n$4\r\ndemo\r\n", Encoding.ASCII.GetString(ClientWorkload.BuildIncrRequest("demo")));
    }

    [Fact]
    public void HttpResponseCheck()
    {
        Assert.Null(ClientWorkload.CheckHttpResponse("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\ncounter=17\n"));
        Assert.Null(ClientWorkload.CheckHttpResponse("HTTP/1.1 200 OK\r\n\r\n<html>counter=1</html>"));
        Assert.Contains("status", ClientWorkload.CheckHttpResponse("HTTP/1.0 500 Internal Server Error\r\n\r\ncounter=1"));
        Assert.Contains("body", ClientWorkload.CheckHttpResponse("HTTP/1.0 200 OK\r\n\r\ncounter=x"));
        Assert.NotNull(ClientWorkload.CheckHttpResponse(""));
        Assert.NotNull(ClientWorkload.CheckHttpResponse("garbage"));
        Assert.NotNull(ClientWorkload.CheckHttpResponse("HTTP/1.0 200 OK\r\ncounter=1"));
    }

    [Fact]
    public void NamespaceNamesAndExecIn()
    {
        Assert.True(DemoTopology.TryParseTag("colo-1a2b-pri", out string tag));
        Assert.Equal("1a2b", tag);
        Assert.True(DemoTopology.TryParseTag("colo-ffff-lan", out _));
        Assert.False(DemoTopology.TryParseTag("colo-1a2b-pri2", out _));
        Assert.False(DemoTopology.TryParseTag("colo-1A2B-pri", out _));
        Assert.False(DemoTopology.TryParseTag("colo-12345-sec", out _));
        Assert.False(DemoTopology.TryParseTag("colo-test-pri", out _));
        Assert.False(DemoTopology.TryParseTag("xcolo-1a2b-pri", out _));

        var psi = DemoTopology.ExecIn("colo-1a2b-lan", "redis-cli", "-h", "198.18.0.10", "PING");
        Assert.Equal("ip", psi.FileName);
        Assert.Equal(["netns", "exec", "colo-1a2b-lan", "redis-cli", "-h", "198.18.0.10", "PING"], psi.ArgumentList);
        Assert.Equal("ip netns exec colo-1a2b-lan redis-cli -h 198.18.0.10 PING", DemoProcess.Describe(psi));
    }

    [Fact]
    public void OptionsValidate()
    {
        var ok = new ClientWorkloadOptions { GuestIp = System.Net.IPAddress.Loopback };
        ok.Validate();
        Assert.Throws<ArgumentException>(() => new ClientWorkloadOptions { GuestIp = System.Net.IPAddress.Loopback, Duration = TimeSpan.Zero }.Validate());
        Assert.Throws<ArgumentException>(() => new ClientWorkloadOptions { GuestIp = System.Net.IPAddress.Loopback, RedisPort = 70000 }.Validate());
        Assert.Throws<ArgumentException>(() => new ClientWorkloadOptions { GuestIp = System.Net.IPAddress.Loopback, HttpPath = "x" }.Validate());
    }
}
