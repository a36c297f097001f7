using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Colo.Vm.Tests;

/// <summary>Scripted QMP server on a unix socket for QmpClient unit tests.</summary>
internal sealed class FakeQmpServer : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly Func<FakeQmpServer, JsonElement, Task> _onCommand;
    private readonly Task _loop;
    private readonly CancellationTokenSource _cts = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private Socket? _conn;

    public FakeQmpServer(string path, Func<FakeQmpServer, JsonElement, Task>? onCommand = null)
    {
        Path = path;
        File.Delete(path);
        _onCommand = onCommand ?? ((s, cmd) => s.ReplyAsync(cmd, "{}"));
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(4);
        _loop = RunAsync();
    }

    public string Path { get; }

    public List<string> Received { get; } = [];

    public static string TempPath(string tag) => System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"fqmp-{tag}-{Environment.ProcessId}-{Guid.NewGuid():N}".Substring(0, 40) + ".sock");

    public Task SendRawAsync(string json) => WriteAsync(json + "\r\n");

    public Task ReplyAsync(JsonElement cmd, string returnJson) =>
        SendRawAsync($"{{\"return\": {returnJson}, \"id\": {cmd.GetProperty("id").GetRawText()}}}");

    public Task ErrorAsync(JsonElement cmd, string cls, string desc) =>
        SendRawAsync($"{{\"id\": {cmd.GetProperty("id").GetRawText()}, \"error\": {{\"class\": \"{cls}\", \"desc\": \"{desc}\"}}}}");

    public Task EventAsync(string name, string dataJson) =>
        SendRawAsync($"{{\"timestamp\": {{\"seconds\": 1700000000, \"microseconds\": 5}}, \"event\": \"{name}\", \"data\": {dataJson}}}");

    public void CloseConnection()
    {
        _conn?.Shutdown(SocketShutdown.Both);
        _conn?.Dispose();
    }

    private async Task WriteAsync(string text)
    {
        byte[] b = Encoding.UTF8.GetBytes(text);
        await _writeLock.WaitAsync();
        try
        {
            await _conn!.SendAsync(b, SocketFlags.None);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task RunAsync()
    {
        try
        {
            _conn = await _listener.AcceptAsync(_cts.Token);
            // Greeting split over two writes to exercise line reassembly.
            await WriteAsync("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, ");
            await WriteAsync("\"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n");
            using NetworkStream ns = new(_conn, ownsSocket: false);
            using StreamReader reader = new(ns, Encoding.UTF8);
            while (await reader.ReadLineAsync(_cts.Token) is { } line)
            {
                lock (Received)
                {
                    Received.Add(line);
                }

                using JsonDocument doc = JsonDocument.Parse(line);
                JsonElement cmd = doc.RootElement.Clone();
                _ = Task.Run(() => _onCommand(this, cmd));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _cts.Cancel();
        _listener.Dispose();
        _conn?.Dispose();
        await _loop;
        File.Delete(Path);
    }
}
