using System.Text;

namespace Colo.Image.Tests;

public class CpioWriterTests
{
    private sealed record Entry(string Name, uint Ino, uint Mode, uint NLink, uint RMaj, uint RMin, byte[] Data);

    /// <summary>Independent newc reader used to check the writer.</summary>
    private static List<Entry> Read(byte[] a)
    {
        var list = new List<Entry>();
        var pos = 0;
        while (true)
        {
            Assert.Equal("070701", Encoding.ASCII.GetString(a, pos, 6));
            uint F(int i) => Convert.ToUInt32(Encoding.ASCII.GetString(a, pos + 6 + i * 8, 8), 16);
            var nameSize = (int)F(11);
            var size = (int)F(6);
            var name = Encoding.ASCII.GetString(a, pos + 110, nameSize - 1);
            Assert.Equal(0, a[pos + 110 + nameSize - 1]);
            var dataPos = (pos + 110 + nameSize + 3) & ~3;
            var data = a.AsSpan(dataPos, size).ToArray();
            list.Add(new Entry(name, F(0), F(1), F(4), F(9), F(10), data));
            pos = (dataPos + size + 3) & ~3;
            if (name == "TRAILER!!!") break;
        }
        Assert.Equal(a.Length, pos);
        return list;
    }

    [Fact]
    public void Writer_ProducesValidNewc_WithAlignmentAndTrailer()
    {
        var ms = new MemoryStream();
        var w = new NewcCpioWriter(ms);
        w.AddDirectory("bin");
        w.AddFile("bin/x", [1, 2, 3], 0x1ED);
        w.AddSymlink("bin/sh", "/bin/busybox");
        w.AddCharDevice("/dev/console", 5, 1);
        w.AddFile("./empty", []);
        w.Finish();
        var bytes = ms.ToArray();
        Assert.Equal(0, bytes.Length % 4);
        Assert.Equal(bytes.Length, w.BytesWritten);

        var e = Read(bytes);
        Assert.Equal(["bin", "bin/x", "bin/sh", "dev/console", "empty", "TRAILER!!!"], e.Select(x => x.Name));
        Assert.Equal(0x41EDu, e[0].Mode);
        Assert.Equal(2u, e[0].NLink);
        Assert.Equal(0x81EDu, e[1].Mode);
        Assert.Equal(new byte[] { 1, 2, 3 }, e[1].Data);
        Assert.Equal(0xA1FFu, e[2].Mode);
        Assert.Equal("/bin/busybox", Encoding.UTF8.GetString(e[2].Data));
        Assert.Equal(0x2180u, e[3].Mode);
        Assert.Equal((5u, 1u), (e[3].RMaj, e[3].RMin));
        Assert.Empty(e[4].Data);
        Assert.Equal(e.Count - 1, e.Take(e.Count - 1).Select(x => x.Ino).Distinct().Count());
    }

    [Fact]
    public void Writer_MatchesDebianCpioListing_WhenCpioInstalled()
    {
        if (!File.Exists("/usr/bin/cpio")) return; // cross-check only where GNU cpio exists
        var ms = new MemoryStream();
        var w = new NewcCpioWriter(ms);
        w.AddDirectory("a");
        w.AddFile("a/hello.txt", Encoding.ASCII.GetBytes("hello\n"));
        w.AddSymlink("a/link", "hello.txt");
        w.Finish();
        var dir = Directory.CreateTempSubdirectory("cpio-test").FullName;
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo("/usr/bin/cpio")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = dir,
            };
            foreach (var a in new[] { "-i", "-d", "--quiet", "--no-absolute-filenames" }) psi.ArgumentList.Add(a);
            using var p = System.Diagnostics.Process.Start(psi)!;
            p.StandardInput.BaseStream.Write(ms.ToArray());
            p.StandardInput.Close();
            Assert.True(p.WaitForExit(10_000));
            Assert.Equal(0, p.ExitCode);
            Assert.Equal("hello\n", File.ReadAllText(Path.Combine(dir, "a", "hello.txt")));
            Assert.Equal("hello.txt", new FileInfo(Path.Combine(dir, "a", "link")).LinkTarget);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("")]
    [InlineData("/")]
    [InlineData("a/../b")]
    [InlineData("TRAILER!!!")]
    public void Writer_RejectsBadPaths(string path)
    {
        var w = new NewcCpioWriter(new MemoryStream());
        Assert.Throws<ArgumentException>(() => w.AddFile(path, []));
    }

    [Fact]
    public void Writer_AfterFinish_Throws()
    {
        var w = new NewcCpioWriter(new MemoryStream());
        w.Finish();
        Assert.Throws<InvalidOperationException>(() => w.AddDirectory("x"));
    }

    [Fact]
    public void Layout_CreatesParentsFirst_AndIsDeterministic()
    {
        byte[] Make()
        {
            var l = new InitramfsLayout();
            l.AddFile("usr/bin/tool", [9]);
            l.AddSymlink("bin/sh", "/bin/busybox");
            l.AddFile("bin/busybox", [1]);
            l.AddSymlink("bin/sh", "/other", replace: false); // keeps first
            var ms = new MemoryStream();
            l.WriteTo(ms);
            return ms.ToArray();
        }
        var a = Make();
        Assert.Equal(a, Make());
        var names = Read(a).Select(e => e.Name).ToList();
        Assert.Equal(["bin", "bin/busybox", "bin/sh", "usr", "usr/bin", "usr/bin/tool", "TRAILER!!!"], names);
        Assert.Equal("/bin/busybox", Encoding.UTF8.GetString(Read(a)[2].Data));
    }

    [Fact]
    public void Layout_FileUnderFile_Throws()
    {
        var l = new InitramfsLayout();
        l.AddFile("a", [1]);
        Assert.Throws<InvalidOperationException>(() => l.AddFile("a/b", [1]));
    }
}
