using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Vm.Tests;

public sealed class QmpClientTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(5);

    private static Task<QmpClient> Connect(FakeQmpServer s) => QmpClient.ConnectAsync(s.Path, T, NullLogger.Instance, CancellationToken.None);

    [Fact]
    public async Task Connect_ReadsGreeting_AndSendsCapabilities()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("greet"));
        await using QmpClient c = await Connect(server);
        Assert.Equal(7, c.Greeting.GetProperty("version").GetProperty("qemu").GetProperty("major").GetInt32());
        Assert.True(c.IsConnected);
        string first = server.Received[0];
        using JsonDocument d = JsonDocument.Parse(first);
        Assert.Equal("qmp_capabilities", d.RootElement.GetProperty("execute").GetString());
        Assert.True(d.RootElement.TryGetProperty("id", out _));
    }

    [Fact]
    public async Task Connect_SocketAppearsLater_Retries()
    {
        string path = FakeQmpServer.TempPath("late");
        Task<QmpClient> connecting = QmpClient.ConnectAsync(path, T, NullLogger.Instance, CancellationToken.None);
        await Task.Delay(150);
        Assert.False(connecting.IsCompleted);
        await using FakeQmpServer server = new(path);
        await using QmpClient c = await connecting;
        Assert.True(c.IsConnected);
    }

    [Fact]
    public async Task Connect_NoSocket_TimesOut()
    {
        string path = FakeQmpServer.TempPath("none");
        await Assert.ThrowsAsync<TimeoutException>(() => QmpClient.ConnectAsync(path, TimeSpan.FromMilliseconds(200), NullLogger.Instance, CancellationToken.None));
    }

    [Fact]
    public async Task Execute_RepliesOutOfOrder_MatchedById()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("order"), async (s, cmd) =>
        {
            string name = cmd.GetProperty("execute").GetString()!;
            if (name == "slow")
            {
                await Task.Delay(200);
            }

            await s.ReplyAsync(cmd, $"{{\"name\": \"{name}\", \"arg\": {(cmd.TryGetProperty("arguments", out JsonElement a) ? a.GetRawText() : "null")}}}");
        });
        await using QmpClient c = await Connect(server);
        Task<JsonElement> slow = c.ExecuteAsync("slow", new { x = 1 });
        Task<JsonElement> fast = c.ExecuteAsync("fast", new Dictionary<string, object> { ["y"] = "z" });
        JsonElement f = await fast;
        Assert.False(slow.IsCompleted);
        Assert.Equal("fast", f.GetProperty("name").GetString());
        Assert.Equal("z", f.GetProperty("arg").GetProperty("y").GetString());
        JsonElement s = await slow;
        Assert.Equal("slow", s.GetProperty("name").GetString());
        Assert.Equal(1, s.GetProperty("arg").GetProperty("x").GetInt32());
    }

    [Fact]
    public async Task Execute_ManyConcurrent_AllMatched()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("many"), (s, cmd) =>
            s.ReplyAsync(cmd, cmd.TryGetProperty("arguments", out JsonElement a) ? a.GetRawText() : "{}"));
        await using QmpClient c = await Connect(server);
        Task<JsonElement>[] tasks = Enumerable.Range(0, 200).Select(i => c.ExecuteAsync("echo", new { i })).ToArray();
        JsonElement[] results = await Task.WhenAll(tasks);
        for (int i = 0; i < results.Length; i++)
        {
            Assert.Equal(i, results[i].GetProperty("i").GetInt32());
        }
    }

    [Fact]
    public async Task Execute_ErrorReply_ThrowsQmpErrorException()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("err"), (s, cmd) =>
            cmd.GetProperty("execute").GetString() == "qmp_capabilities"
                ? s.ReplyAsync(cmd, "{}")
                : s.ErrorAsync(cmd, "CommandNotFound", "The command nope has not been found"));
        await using QmpClient c = await Connect(server);
        QmpErrorException e = await Assert.ThrowsAsync<QmpErrorException>(() => c.ExecuteAsync("nope"));
        Assert.Equal("CommandNotFound", e.ErrorClass);
        Assert.Equal("The command nope has not been found", e.Description);
        Assert.Equal("nope", e.Command);
        Assert.True(c.IsConnected);
    }

    [Fact]
    public async Task Events_RaisedAndAwaitable_WithPredicate()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("ev"), async (s, cmd) =>
        {
            if (cmd.GetProperty("execute").GetString() == "migrate")
            {
                await s.EventAsync("MIGRATION", "{\"status\": \"setup\"}");
                await s.EventAsync("MIGRATION", "{\"status\": \"completed\"}");
            }

            await s.ReplyAsync(cmd, "{}");
        });
        await using QmpClient c = await Connect(server);
        List<QmpEvent> seen = [];
        c.EventReceived += e =>
        {
            lock (seen)
            {
                seen.Add(e);
            }
        };
        Task<QmpEvent> done = c.WaitForEventAsync("MIGRATION", e => e.GetDataString("status") == "completed", T, CancellationToken.None);
        await c.ExecuteAsync("migrate", new { uri = "unix:/x" });
        QmpEvent ev = await done;
        Assert.Equal("completed", ev.GetDataString("status"));
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1700000000).AddTicks(50), ev.Timestamp);
        lock (seen)
        {
            Assert.Equal(new[] { "setup", "completed" }, seen.Select(e => e.GetDataString("status") ?? "").ToArray());
        }
    }

    [Fact]
    public async Task WaitForEvent_NoEvent_TimesOut()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("evto"));
        await using QmpClient c = await Connect(server);
        await Assert.ThrowsAsync<TimeoutException>(() => c.WaitForEventAsync("STOP", null, TimeSpan.FromMilliseconds(100), CancellationToken.None));
    }

    [Fact]
    public async Task ServerClosesMidCommand_AllPendingFailWithDisconnected()
    {
        FakeQmpServer? srv = null;
        await using FakeQmpServer server = srv = new(FakeQmpServer.TempPath("close"), (s, cmd) =>
        {
            if (cmd.GetProperty("execute").GetString() == "qmp_capabilities")
            {
                return s.ReplyAsync(cmd, "{}");
            }

            if (cmd.GetProperty("execute").GetString() == "die")
            {
                s.CloseConnection();
            }

            return Task.CompletedTask; // never answer "hang"
        });
        await using QmpClient c = await Connect(server);
        Task<JsonElement> a = c.ExecuteAsync("hang");
        Task<JsonElement> b = c.ExecuteAsync("hang");
        Task<QmpEvent> ev = c.WaitForEventAsync("SHUTDOWN", null, T, CancellationToken.None);
        Stopwatch sw = Stopwatch.StartNew();
        Task<JsonElement> d = c.ExecuteAsync("die");
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => a);
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => b);
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => d);
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => ev);
        Assert.True(sw.ElapsedMilliseconds < 2000, $"took {sw.ElapsedMilliseconds} ms");
        await c.Completion.WaitAsync(T);
        Assert.False(c.IsConnected);
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => c.ExecuteAsync("query-status"));
    }

    [Fact]
    public async Task Execute_NoReply_TimesOut_AndConnectionStaysUsable()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("to"), (s, cmd) =>
            cmd.GetProperty("execute").GetString() == "hang" ? Task.CompletedTask : s.ReplyAsync(cmd, "{\"ok\": true}"));
        await using QmpClient c = await Connect(server);
        Stopwatch sw = Stopwatch.StartNew();
        await Assert.ThrowsAsync<TimeoutException>(() => c.ExecuteAsync("hang", null, TimeSpan.FromMilliseconds(100)));
        Assert.InRange(sw.ElapsedMilliseconds, 90, 2000);
        JsonElement r = await c.ExecuteAsync("query-status");
        Assert.True(r.GetProperty("ok").GetBoolean());
    }

    [Fact]
    public async Task Execute_Cancelled_ThrowsOperationCanceled()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("cancel"), (s, cmd) =>
            cmd.GetProperty("execute").GetString() == "hang" ? Task.CompletedTask : s.ReplyAsync(cmd, "{}"));
        await using QmpClient c = await Connect(server);
        using CancellationTokenSource cts = new(50);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => c.ExecuteAsync("hang", null, null, cts.Token));
    }

    [Fact]
    public async Task Dispose_FailsPendingWithDisconnected()
    {
        await using FakeQmpServer server = new(FakeQmpServer.TempPath("disp"), (s, cmd) =>
            cmd.GetProperty("execute").GetString() == "hang" ? Task.CompletedTask : s.ReplyAsync(cmd, "{}"));
        QmpClient c = await Connect(server);
        Task<JsonElement> p = c.ExecuteAsync("hang");
        await c.DisposeAsync();
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => p);
        Assert.True(c.Completion.IsCompleted);
        await c.DisposeAsync();
    }
}
